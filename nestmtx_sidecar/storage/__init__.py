"""What is kept: the SQL store, the singleton lease, and the private data directory."""
