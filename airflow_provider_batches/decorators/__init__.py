"""TaskFlow decorators (``@task.anthropic_batch``)."""
