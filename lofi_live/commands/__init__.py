"""One module per lofi-live command."""
