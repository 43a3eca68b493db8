"""Built-in job kinds, one module each; importing this package registers them all."""

from jobtrail.workers.kinds import demo, export_pdf, export_zip  # noqa: F401 - imported to register
