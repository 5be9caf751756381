"""The lab kubelet: Pod objects become pod network namespaces with responders."""
