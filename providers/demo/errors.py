"""The demo provider cannot fail: no network, no key, no upstream error to map. The module
exists so every provider package has the same files."""
