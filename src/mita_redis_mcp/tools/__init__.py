"""The tools, one module per family. Each tool is a plain async function whose first
parameter is the ``App``; ``server`` binds it and registers it. Tools are thin:
validate, check the scope, call the backend, return a typed answer."""
