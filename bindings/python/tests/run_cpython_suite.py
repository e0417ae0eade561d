"""Runs CPython's own Lib/test/test_socketserver.py against libsocketserver.

The test module is loaded with ``socketserver`` resolving to the binding
(``sys.modules['socketserver'] = libsocketserver``), unchanged. Which copy:
the one vendored here for the running Python's minor version
(tests/cpython/test_socketserver_3_11.py, CPython 3.11.7, unmodified), else
the interpreter's own ``test.test_socketserver`` if it ships one.

Usage: python3 run_cpython_suite.py [unittest args, e.g. -v or test names]
Prints unittest's report; exits 0 when every test passed apart from the
known failures listed in KNOWN_FAILURES (each must still fail: a test that
starts passing is reported, so the list stays true).
"""

import importlib.util
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
if os.environ.get("LIBSOCKETSERVER_FROM_TREE", "1") == "1":
    sys.path.insert(0, os.path.dirname(HERE))

import libsocketserver  # noqa: E402

sys.modules["socketserver"] = libsocketserver

# Tests that check something the binding cannot honestly provide (see
# README.md, "CPython's test suite"), with the reason.
KNOWN_FAILURES = {
    "test_all": "checks that every public object's __module__ is "
                "'socketserver'; the binding's classes live in "
                "'libsocketserver' (and __all__ has the extras)",
}


# Load-sensitive tests (see README.md): one failure is retried once, alone,
# and reported as such.
RETRY_ONCE = {
    "test_threads_reaped": "counts live handler threads right after 10 quick "
                           "requests; under heavy load all 10 may still run",
}


def load_module():
    vendored = os.path.join(
        HERE, "cpython", "test_socketserver_%d_%d.py" % sys.version_info[:2])
    if os.path.exists(vendored):
        spec = importlib.util.spec_from_file_location("test_socketserver", vendored)
        module = importlib.util.module_from_spec(spec)
        sys.modules["test_socketserver"] = module
        spec.loader.exec_module(module)
        return module, vendored
    import test.test_socketserver as module  # the interpreter's own copy
    return module, module.__file__


def main(argv):
    verbosity = 2 if "-v" in argv else 1
    names = [a for a in argv if not a.startswith("-")]
    module, path = load_module()
    print("CPython suite: %s against libsocketserver %s (package %s, library %s)"
          % (path, libsocketserver.library_version(), libsocketserver.__file__,
             libsocketserver._lib.path))
    loader = unittest.TestLoader()
    if names:
        suite = loader.loadTestsFromNames(names, module)
    else:
        suite = loader.loadTestsFromModule(module)
    result = unittest.TextTestRunner(verbosity=verbosity).run(suite)
    failed = {}
    for test, trace in result.failures + result.errors:
        failed[test.id().rsplit(".", 1)[-1]] = trace
    for name in sorted(set(failed) & set(RETRY_ONCE)):
        test_id = next(t.id() for t, _ in result.failures + result.errors
                       if t.id().endswith("." + name))
        print("CPython suite: %s failed (%s); retrying it once alone" % (name, RETRY_ONCE[name]))
        print(failed[name])
        retry = unittest.TextTestRunner(verbosity=verbosity).run(
            loader.loadTestsFromName(test_id.split(".", 1)[1], module))
        if retry.wasSuccessful():
            print("CPython suite: %s passed on the retry" % name)
            del failed[name]
    unexpected = sorted(set(failed) - set(KNOWN_FAILURES))
    fixed = sorted(n for n in KNOWN_FAILURES if n not in failed and
                   (not names or any(n in x for x in names)))
    passed = result.testsRun - len(failed) - len(result.skipped)
    print("CPython suite: %d run, %d passed, %d failed (%d known: %s), %d skipped"
          % (result.testsRun, passed, len(failed),
             len(set(failed) & set(KNOWN_FAILURES)),
             ", ".join(sorted(set(failed) & set(KNOWN_FAILURES))) or "none",
             len(result.skipped)))
    for name, reason in result.skipped:
        print("  skipped %s: %s" % (name.id(), reason))
    if unexpected:
        print("UNEXPECTED FAILURES: %s" % ", ".join(unexpected))
    if fixed:
        print("KNOWN FAILURES THAT PASSED (update KNOWN_FAILURES): %s" % ", ".join(fixed))
    return 1 if unexpected or fixed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
