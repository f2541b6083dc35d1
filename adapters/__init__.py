"""Platform I/O only: each adapter turns platform messages into IncomingMessage and back."""
