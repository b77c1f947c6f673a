"""jupyter_kernel_test's conformance suite against the installed loupe kernel: every test
it offers is switched on."""
import unittest

import jupyter_kernel_test as jkt

import conftest  # noqa: F401  (installs the kernel into a private Jupyter path)


class LoupeKernelTests(jkt.KernelTests):
    kernel_name = "loupe"
    language_name = "loupe"
    file_extension = ".loupe"

    code_hello_world = 'print "hello, world"'
    code_stderr = 'print "oops" stderr=true'

    completion_samples = [
        {"text": "pri", "matches": {"print"}},
        {"text": "sleep 1 inter", "matches": set()},
        {"text": "x = 1\nhel", "matches": {"help"}},
    ]
    complete_code_samples = ["1", 'print "x"', "repeat 2 {\n  print 1\n}", "x = [1,\n 2]"]
    incomplete_code_samples = ["repeat 2 {", "x = [1, 2", "if true {\n  print 1"]
    invalid_code_samples = ["x = )", "}"]

    code_page_something = "print?"
    code_generate_error = "undefined_name"
    code_execute_result = [
        {"code": "6 * 7", "result": "42"},
        {"code": '"a" + "b"', "result": '"ab"'},
        {"code": "[1, 2.5, true, none]", "result": "[1, 2.5, true, none]"},
    ]
    code_display_data = [
        {"code": 'display "shown"', "mime": "text/plain"},
    ]
    code_history_pattern = "6 ? 7"
    supported_history_operations = ("tail", "range", "search")
    code_inspect_sample = "print"
    code_clear_output = 'print "a"\nclear'


class LoupeIopubWelcome(jkt.IopubWelcomeTests):
    kernel_name = "loupe"
    support_iopub_welcome = True


if __name__ == "__main__":
    unittest.main()
