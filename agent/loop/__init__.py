"""The agent loop: informers (watch), the sync runner (sync), parsing (snapshot) and the
loop that compiles and programs (agent)."""
