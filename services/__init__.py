"""The four pipeline services (capture, detector, classifier, sink) and the CLI."""
