"""Workers: the taskiq broker, the job runner, the context handed to handlers, the kinds."""
