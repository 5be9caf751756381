"""The eBPF backend, in layers: pure planning (`identities`, `entries`, `planner`), its
text (`plan_text`) and its reading (`evaluate`, the datapath's lookups in Python); byte
codecs derived from the ctypes mirror of bpf/picket.h (`codec`); then the kernel: map I/O
(`maps`), compiling, loading and attaching the programs (`loader`), and the backend that
ties them together (`backend`)."""
