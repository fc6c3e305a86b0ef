"""Flow's public Python face: the ``flow`` command (``flow.cli``) sits here, above the engine,
the workers and the web app, which it composes; nothing below imports this package.
"""
