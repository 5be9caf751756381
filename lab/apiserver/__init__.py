"""The lab API server: the Kubernetes REST API for the resources the lab serves."""
