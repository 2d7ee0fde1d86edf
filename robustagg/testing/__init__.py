"""Public testing toolkit: hypothesis strategies, property checks and naive reference
implementations (needs ``hypothesis``)."""
