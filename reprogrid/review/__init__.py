"""Morning review of finished jobs: contact sheets, HTML reports, exports, refine jobs.

Reads the database through ``reprogrid.models`` and builds refine specs with
``reprogrid.scheduler``; never imports ``reprogrid.worker``, diffusers or torch.
"""
