"""Recording a live session: the crash-safe journal and the two-track .mid."""
