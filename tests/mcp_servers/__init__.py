"""Real MCP servers the MCP tests start (written with the mcp package): ``python -m tests.mcp_servers.<name>``."""
