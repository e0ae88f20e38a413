"""Code shared by the operator scripts: stack outputs, SSH, tunnels and the Ollama API."""
