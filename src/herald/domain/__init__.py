"""Pure logic with no I/O: states, message schemas, validation rules."""
