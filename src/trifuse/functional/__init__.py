"""Public functional API: validate user input, flatten to the registered ops' fixed ranks, call them."""
