"""The process's logging: its set-up and the `log` event stream."""
