"""Launchers: validate, allocate, pick a config, launch. Destination-passing `*_into` functions write
into a given output; the allocating wrappers above them are what torch.library registers."""
