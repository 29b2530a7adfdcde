"""The demo provider reads no upstream payload (it has no upstream), so it has no view types;
the module exists so every provider package has the same files."""
