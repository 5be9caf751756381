"""The agent loop: informers (watch), the sync runner (sync), parsing (snapshot) and the
loop that compiles and programs (agent). It does not import the drop log: the drop log is
handed the agent as a reader of its cache (agent/droplog/service.py:CacheReader)."""
