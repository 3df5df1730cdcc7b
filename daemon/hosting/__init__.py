"""Modules as the pipeline sees them: one ``ModuleHandle`` for in-process and attached modules.

- ``module_host.py``   — ``ModuleHost`` (the ``ModuleSet`` port): starts enabled modules, keeps the
  router and schedulers in step, reloads on SIGHUP; ``LocalModule`` wraps an in-process module
- ``remote_module.py`` — ``RemoteModule``: a module in another process, attached over a WebSocket;
  ``parse_registration`` checks its first frame
"""
