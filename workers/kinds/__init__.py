"""Built-in job kinds, one module each; importing this package registers them all."""

from workers.kinds import demo  # noqa: F401
