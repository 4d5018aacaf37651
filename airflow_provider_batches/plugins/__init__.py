"""The Airflow UI's Batches view: every batch job of the provider's create tasks, with progress and spend.

``batches_view.AnthropicBatchesPlugin`` registers it (see ``get_provider_info`` and the
``airflow.plugins`` entry point); ``app`` serves it, ``store`` reads Airflow's database, ``jobs``
turns stored records and manifests into what the page shows.
"""
