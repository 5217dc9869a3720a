"""labelwise-focal: an example third-party labelwise plugin (focal loss on partial labels)."""
__version__ = "0.1.0"
