"""The version of pyro-vae."""

__version__ = "0.1.0"
