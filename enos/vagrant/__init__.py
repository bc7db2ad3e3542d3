"""Helpers of the ``vagrant`` provider: flavours, the machine/network plan, the Vagrantfile
template and its rendering, the libvirt side of the libvirt backend, and the vagrant
processes of an env."""
