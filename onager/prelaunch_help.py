"""The text of `onager prelaunch +help`, apart from prelaunch.py: printing it needs neither
the sweep machinery nor dataclasses, which would make the help cost four bare Python starts."""
from __future__ import annotations

#: argument lists that ask for the help and nothing else (prelaunch.parse reads the rest)
HELP_WORDS = frozenset({"+help", "+h"})


def only_help(argv: list[str]) -> bool:
    """Whether `prelaunch ARGV` prints the help whatever else parse() would say: -h or --help
    first (parse() stops there), or nothing but +help / +h."""
    return argv[:1] in (["-h"], ["--help"]) or (bool(argv) and all(word in HELP_WORDS for word in argv))


HELP = """usage: onager prelaunch +command CMD +jobname NAME [+arg --name [V ...]] [+pos-arg V [V ...]]
                        [+flag --name] [+tag [--tag]] [+tag-args --name ...] [+no-tag-number]
                        [+link] [+sample N [+seed S]] [+from SWEEPFILE]
                        [+gin-arg NAME V [V ...]] [+gin-flag --name] [+override KEY V [V ...]]
                        [+exclude --name V [V ...] [+exclude ...]] [+or] [+repeat N]
                        [+no-tag-arg NAME ...] [+no-tag-jobname]
                        [+from-results JOB +top N|N% +by [-]METRIC]
                        [+tune N +metric min:NAME|max:NAME [+sampler tpe|random|cmaes] [+seed S]]
                        [+jobfile PATH] [+append] [+quiet] [+dry-run]

Expand every combination of the given values into a jobfile (.onager/scripts/NAME/jobs.json)
and print the commands. The first dimension varies fastest; flags are outermost.

  +command CMD          base command (shell text, e.g. "python train.py")
  +jobname NAME         job name: letters, digits, '.', '_', '-'
  +jobfile PATH         jobfile to write (default .onager/scripts/{jobname}/jobs.json)
  +arg --name [V ...]   an argument and its values (no values: --name on every command)
  +pos-arg V [V ...]    a positional argument and its values
  +flag --name          a flag, with and without (two variants)
  +tag [NAME]           pass a unique tag per task as NAME <tag> (NAME default --tag)
  +tag-args --name ...  which +arg names go into the tag (default: all)
  +no-tag-number        leave the task number out of tags
  +no-tag-arg NAME ...  leave these dimensions out of tags (the complement of +tag-args)
  +no-tag-jobname       leave the job name out of tags
  +gin-arg NAME V ...   a gin binding per value: --gin_bindings 'NAME = V' (tagged like +arg)
  +gin-flag --name      the option that carries +gin-arg bindings (default --gin_bindings)
  +override KEY V ...   a Hydra-style KEY=V word per value (tagged like +arg)
  +exclude NAME V ...   skip tasks where NAME takes one of these values; consecutive +exclude
                        options form one rule (all must match); a rule ends at any other
                        option, or at +or between two +exclude
  +repeat N             N replicates of every task (param replicate, ONAGER_REPLICATE, __rep_K tag)
  +from-results JOB     a new job of the best tasks of JOB (their commands and params), with
  +top N|N% +by [-]M      +top tasks sorted by metric M (-M: highest first); args given here
                          replace those tasks' values of the same argument
  +link                 zip the next +arg/+pos-arg with the one before (same number of values)
  +sample N             N random tasks instead of the whole grid (random search)
  +seed S               seed of +sample (default 0): the same seed gives the same tasks
  +tune N               adaptive search: N trials over the dimensions, run by launch --agents K
                        (docs/tuning.md); jobs.json gets N random draws as placeholders
  +metric min:NAME      with +tune: the metric to minimize (max:NAME to maximize) that the
                        task logs with onager.log_result(NAME=...)
  +sampler NAME         with +tune: tpe (default), random or cmaes; +seed S seeds it
  +from FILE            read command, jobname, dimensions... from a .toml or .json sweep file;
                        options given here add to it or override it
  +append, +a           add to the existing jobfile, numbering after its last task
  +quiet, +q            do not print the commands
  +dry-run              print the commands, write nothing

Value generators, usable among the values of +arg and +pos-arg:
  +range START STOP [STEP]  integers, STOP excluded (Python's range)
  +linspace A B N           N evenly spaced values from A to B, both included
  +logspace A B N           N values evenly spaced on a log scale from A to B, both included
  +files PATTERN            the files a glob matches, sorted (quote the pattern)
  +uniform A B, +loguniform A B, +randint A B   random draws, with +sample only

Values are passed byte for byte (quoted for the shell when needed). A value that starts
with '+' is written with one more '+': ++5 passes +5. See docs/sweeps.md.

examples:
  onager prelaunch +jobname exp1 +command myscript +arg --lr 0.1 0.01 +arg --bs 32 64 +tag
  onager prelaunch +jobname exp2 +command ./run.sh +pos-arg a b +flag --verbose +tag --run-tag
  onager prelaunch +jobname exp3 +command "python train.py" +arg --lr +logspace 1e-4 1e-1 4 +arg --seed +range 0 3
  onager prelaunch +jobname exp4 +command "python train.py" +arg --lr 0.1 0.01 +link +arg --wd 1 2
  onager prelaunch +jobname exp5 +command "python train.py" +arg --lr +loguniform 1e-5 1 +sample 20 +seed 1
  onager prelaunch +from sweep.toml +jobname exp6
  onager prelaunch +jobname exp7 +command "python train.py" +arg --mode mc ce +arg --coef -1 0.0 1
                   +exclude --mode mc +exclude --coef -1 1
  onager prelaunch +jobname exp8 +command "python run.py" +gin-arg GridWorldEnv.size 42 84 +repeat 10 +tag
  onager prelaunch +jobname exp9 +from-results exp1 +top 25% +by -val_acc +arg --epochs 30 +tag
"""
