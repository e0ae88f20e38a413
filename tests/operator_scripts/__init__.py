"""Tests of the operator scripts in scripts/ against a real sshd and the stand-in Ollama server."""
