"""Helpers of the libvirt provider: XML documents, seed disks, the KVM probe."""
