"""Repository consistency: ``# Copied from`` marks match their source (utils/check_copies.py); the checker works."""

import importlib.util
import subprocess
import sys
import textwrap
import unittest
from pathlib import Path
from tempfile import TemporaryDirectory


REPO_ROOT = Path(__file__).resolve().parent.parent
CHECKER = REPO_ROOT / "utils" / "check_copies.py"

_spec = importlib.util.spec_from_file_location("check_copies", CHECKER)
check_copies = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("check_copies", check_copies)
_spec.loader.exec_module(check_copies)


def run_checker(root, *args):
    return subprocess.run(
        [sys.executable, str(CHECKER), "--root", str(root), *args], capture_output=True, text=True, timeout=60
    )


class RepositoryCopiesTest(unittest.TestCase):
    def test_copied_from_marks_match_their_source(self):
        mismatches = check_copies.check_copies(REPO_ROOT)
        report = "\n".join(str(mismatch) for mismatch in mismatches)
        self.assertEqual(mismatches, [], f"{report}\nfix: python utils/check_copies.py --fix")

    def test_command_line_passes_on_repository(self):
        result = run_checker(REPO_ROOT)
        self.assertEqual(result.returncode, 0, result.stderr)


ALPHA = '''\
import torch
from torch import nn


class AlphaSelfAttention(nn.Module):
    """Self-attention of Alpha."""

    def __init__(self, config):
        super().__init__()
        self.alpha_scale = config.hidden_size**-0.5
        self.query = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states):
        # (B, L, H)
        return self.query(hidden_states) * self.alpha_scale


@torch.no_grad()
def alpha_init(module):
    module.weight.zero_()


class AlphaLayer(nn.Module):
    def feed_forward(self, hidden_states):
        return hidden_states * 2
'''

BETA = '''\
import torch
from torch import nn


# Copied from hf_vl.models.alpha.modeling_alpha.AlphaSelfAttention with Alpha->Beta all-casing
class BetaSelfAttention(nn.Module):
    """Self-attention of Beta."""

    def __init__(self, config):
        super().__init__()
        self.beta_scale = config.hidden_size**-0.5
        self.query = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden_states):
        # (B, L, H)
        return self.query(hidden_states) * self.beta_scale


# Copied from hf_vl.models.alpha.modeling_alpha.alpha_init with alpha->beta
@torch.no_grad()
def beta_init(module):
    module.weight.zero_()


class BetaLayer(nn.Module):
    def extra(self):
        return 1

    # Copied from hf_vl.models.alpha.modeling_alpha.AlphaLayer.feed_forward
    def feed_forward(self, hidden_states):
        return hidden_states * 2
'''


class CheckCopiesTest(unittest.TestCase):
    """The checker on a throwaway tree with ``src/hf_vl/models/{alpha,beta}``."""

    def setUp(self):
        self._tmp = TemporaryDirectory()
        self.addCleanup(self._tmp.cleanup)
        self.root = Path(self._tmp.name)
        models = self.root / "src" / "hf_vl" / "models"
        for name, code in (("alpha", ALPHA), ("beta", BETA)):
            (models / name).mkdir(parents=True)
            (models / name / "__init__.py").write_text("")
            (models / name / f"modeling_{name}.py").write_text(code)
        (self.root / "src" / "hf_vl" / "__init__.py").write_text("")
        (models / "__init__.py").write_text("")
        self.beta = models / "beta" / "modeling_beta.py"

    def edit_beta(self, old, new, count=1):
        text = self.beta.read_text()
        self.assertIn(old, text)
        self.beta.write_text(text.replace(old, new, count))

    def test_matching_copies_pass(self):
        self.assertEqual(check_copies.check_copies(self.root), [])
        result = run_checker(self.root)
        self.assertEqual(result.returncode, 0, result.stderr)

    def test_drifted_copy_fails_with_location_and_diff(self):
        self.edit_beta("return self.query(hidden_states) * self.beta_scale", "return self.query(hidden_states)")
        mismatches = check_copies.check_copies(self.root)
        self.assertEqual(len(mismatches), 1)
        mismatch = mismatches[0]
        self.assertEqual((mismatch.path, mismatch.line), (self.beta, 5))
        self.assertEqual(mismatch.target, "hf_vl.models.alpha.modeling_alpha.AlphaSelfAttention")
        self.assertIn("-        return self.query(hidden_states) * self.beta_scale", mismatch.diff())
        self.assertIn("+        return self.query(hidden_states)\n", mismatch.diff())
        result = run_checker(self.root)
        self.assertEqual(result.returncode, 1)
        self.assertIn(f"{self.beta}:5: copy of hf_vl.models.alpha.modeling_alpha.AlphaSelfAttention", result.stderr)

    def test_drift_in_the_source_is_caught_too(self):
        alpha = self.root / "src" / "hf_vl" / "models" / "alpha" / "modeling_alpha.py"
        alpha.write_text(alpha.read_text().replace("return hidden_states * 2", "return hidden_states * 3"))
        mismatches = check_copies.check_copies(self.root)
        self.assertEqual([(m.path, m.line) for m in mismatches], [(self.beta, 29)])  # the method copy

    def test_replacements_are_required_and_applied(self):
        # without `all-casing` the lower-case `alpha_scale` is not renamed and the copy no longer matches
        self.edit_beta("with Alpha->Beta all-casing", "with Alpha->Beta")
        self.assertEqual(len(check_copies.check_copies(self.root)), 1)
        self.edit_beta("with Alpha->Beta", "with Alpha->Beta, alpha->beta")
        self.assertEqual(check_copies.check_copies(self.root), [])
        replacements = check_copies.parse_replacements("with Alpha->Beta all-casing")
        self.assertEqual(check_copies.apply_replacements("Alpha alpha ALPHA", replacements), "Beta beta BETA")

    def test_decorator_is_part_of_the_copy_below_the_mark(self):
        self.edit_beta("@torch.no_grad()\ndef beta_init", "@torch.enable_grad()\ndef beta_init")
        mismatches = check_copies.check_copies(self.root)
        self.assertEqual([m.line for m in mismatches], [19])

    def test_fix_repairs_drifted_copies(self):
        original = self.beta.read_text()
        self.edit_beta("self.beta_scale = config.hidden_size**-0.5", "self.beta_scale = 1.0\n        self.extra = 2")
        self.edit_beta("return hidden_states * 2", "return hidden_states")
        self.assertEqual(len(check_copies.check_copies(self.root)), 2)
        result = run_checker(self.root, "--fix")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(self.beta.read_text(), original)
        self.assertEqual(run_checker(self.root).returncode, 0)

    def test_broken_marks_are_errors(self):
        for bad_mark, message in (
            ("hf_vl.models.alpha.modeling_alpha.AlphaMissing", "is not a class, function or method"),
            ("hf_vl.models.gamma.modeling_gamma.GammaLayer", "no module under"),
            ("hf_vl.models.alpha.modeling_alpha.AlphaSelfAttention using Alpha->Beta", "expected `with A->B"),
        ):
            with self.subTest(bad_mark=bad_mark):
                self.beta.write_text(BETA.replace(
                    "hf_vl.models.alpha.modeling_alpha.AlphaSelfAttention with Alpha->Beta all-casing", bad_mark
                ))
                with self.assertRaisesRegex(check_copies.CopyMarkError, f"modeling_beta.py:5: .*{message}"):
                    check_copies.check_copies(self.root)
                result = run_checker(self.root)
                self.assertEqual(result.returncode, 1)
                self.assertIn("modeling_beta.py:5", result.stderr)

    def test_function_copied_into_a_class_is_reindented(self):
        alpha = self.root / "src" / "hf_vl" / "models" / "alpha" / "modeling_alpha.py"
        source = 'def shift(x):\n    """Shift.\nSecond line (its indentation is content)."""\n    return x + 1\n'
        alpha.write_text(alpha.read_text() + "\n\n" + source)
        copy = (
            "    # Copied from hf_vl.models.alpha.modeling_alpha.shift\n"
            "    def shift(x):\n"
            '        """Shift.\n'
            'Second line (its indentation is content)."""\n'
            "        return x + 1\n"
        )
        self.beta.write_text(BETA + copy)
        self.assertEqual(check_copies.check_copies(self.root), [])
        self.beta.write_text(BETA + copy.replace("x + 1", "x + 2"))
        self.assertEqual(run_checker(self.root, "--fix").returncode, 0)
        self.assertEqual(self.beta.read_text(), BETA + copy)

    def test_copy_of_installed_transformers_code(self):
        target = "transformers.models.bert.modeling_bert.BertSelfOutput"
        source = check_copies.SourceTree(self.root).source_lines(target, include_decorators=False)
        self.assertTrue(source[0].startswith("class BertSelfOutput("))
        copy = "\n".join(source).replace("Bert", "Beta") + "\n"
        self.beta.write_text(BETA + f"\n\n# Copied from {target} with Bert->Beta\n" + copy)
        self.assertEqual(check_copies.check_copies(self.root), [])
        self.beta.write_text(BETA + f"\n\n# Copied from {target} with Bert->Beta\n" + copy.replace("dropout", "drop"))
        self.assertEqual([m.target for m in check_copies.check_copies(self.root)], [target])

    def test_mark_must_precede_an_object(self):
        self.beta.write_text(BETA + "\n# Copied from hf_vl.models.alpha.modeling_alpha.alpha_init\nX = 1\n")
        with self.assertRaisesRegex(check_copies.CopyMarkError, "right above a class"):
            check_copies.check_copies(self.root)


if __name__ == "__main__":
    unittest.main()
