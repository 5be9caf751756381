"""The drop log: denied connections, captured from the datapath, folded per connection,
rate limited, named after pods and policies, and written to journald."""
