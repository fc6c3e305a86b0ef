"""The built-in step handlers, one module per task type (``http``, ``data``, ``compensation``,
``noop``). Each imports ``workers.handler_api`` only, never the registry or the consumer.
"""
