"""The processing pipeline shared by both runtimes: processor, jobs, timers, consumers."""
