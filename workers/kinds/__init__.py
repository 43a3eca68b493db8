"""Built-in job kinds, one module each; importing this package registers them all."""

from jobtrail.workers.kinds import demo  # noqa: F401
from jobtrail.workers.kinds import export_pdf  # noqa: F401
from jobtrail.workers.kinds import export_zip  # noqa: F401
