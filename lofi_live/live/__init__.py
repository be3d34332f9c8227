"""The live engine's parts and the loop that wires them."""
