"""Shared plumbing for every agegender service: wire codec, sockets, config, metrics, health."""
