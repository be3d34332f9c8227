"""The exported model: format, loading, step and window graphs, sampling."""
