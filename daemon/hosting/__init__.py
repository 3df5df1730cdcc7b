"""Modules as the pipeline sees them: one ``ModuleHandle`` for in-process and attached modules.

- ``module_host.py``   — ``ModuleHost`` (the ``ModuleSet`` port): starts enabled modules, keeps the
  router and schedulers in step, reloads on SIGHUP; ``LocalModule`` wraps an in-process module
- ``attachment.py``    — ``Attachment``: who may attach a remote module, whom it serves, the watch on
  its credential (the door only moves its frames)
- ``remote_module.py`` — ``RemoteModule``: a module in another process, attached over a WebSocket;
  ``parse_registration`` checks its first frame
"""
