"""vidzoo.pool: the time a worker spends importing the job's module is not counted against a file."""

from vidzoo.pool import run_per_file


def test_importing_the_jobs_module_is_not_counted_against_the_first_files():
    from slow_import_job import double  # 1.5 s to import, in each spawned worker too

    results = run_per_file(double, [1, 2, 3], workers=2, timeout=1.0,
                           failed=lambda task, error, reason: f"{error}: {reason}")
    assert results == [2, 4, 6]
