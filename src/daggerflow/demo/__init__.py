"""The pizza demo: the README's PizzaWorkflow with simulated order and delivery services.

``daggerflow demo pizza`` runs it end to end on the embedded engine; ``examples/pizza.py``
is the README-shaped version that reuses the simulated services from :mod:`.services`.
"""
