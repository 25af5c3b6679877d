# The demo model's own targets, included by the Makefile (deleted with model/ in a fork).
.PHONY: weights

weights: $(STAMP) ## Train the byte-level model on the stdlib into weights/ (~11 min, 2 CPU cores)
	$(PY) -m model.train

.PHONY: profile
profile: $(STAMP) ## Where the server's time goes at 8 and 32 at once (py-spy; ~3 min, quiet machine)
	$(PY) -m benchmarks.model.profile_server
