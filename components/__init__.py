"""Components of the ollama-alicloud Pulumi program."""
