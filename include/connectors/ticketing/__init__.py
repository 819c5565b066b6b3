"""Ticketing connectors: one interface (:class:`TicketingHook`), one adapter per system."""
