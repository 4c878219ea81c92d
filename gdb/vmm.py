"""gdb commands wrapping vmm-host's monitor commands, taking gdb expressions.

    (gdb) source gdb/vmm.py
    (gdb) vmm walk $cr2          # walk the faulting address through the page tables
    (gdb) vmm walk &some_global
    (gdb) vmm phys $cr3 64       # the PML4's first entries
    (gdb) vmm explain | history 5 | audit | maps | idt | gdt | regs | diff
    (gdb) vmm catch gp,pf        # stop on these exceptions from now on
    (gdb) vmm-pte $rip           # just the leaf entry that maps an address

`monitor ...` works too; these commands add gdb expressions ($cr2, symbols, arithmetic)
where the monitor only understands numbers.
"""

import re

import gdb

# Commands whose first argument is an address and may be a gdb expression.
_ADDRESS_COMMANDS = ("walk", "phys")


def _value(expression):
    """A gdb expression as an unsigned 64-bit number."""
    return int(gdb.parse_and_eval(expression)) & (2**64 - 1)


def monitor(line):
    """Send `line` to vmm-host's monitor and return its answer as text."""
    return gdb.execute("monitor " + line, to_string=True)


class Vmm(gdb.Command):
    """Run a vmm-host monitor command; addresses may be gdb expressions.

Usage: vmm COMMAND [ARGS]   (vmm help lists the commands)"""

    def __init__(self):
        super().__init__("vmm", gdb.COMMAND_DATA)

    def invoke(self, argument, from_tty):
        words = gdb.string_to_argv(argument)
        if not words:
            words = ["help"]
        command, args = words[0], words[1:]
        if command in _ADDRESS_COMMANDS and args:
            args[0] = "%#x" % _value(args[0])
        if command == "phys" and len(args) > 1:
            args[1] = "%d" % _value(args[1])
        gdb.write(monitor(" ".join([command] + args)))


class VmmPte(gdb.Command):
    """Show the page-table entry that maps an address (the last level of its walk).

Usage: vmm-pte EXPRESSION"""

    def __init__(self):
        super().__init__("vmm-pte", gdb.COMMAND_DATA)

    def invoke(self, argument, from_tty):
        walk = monitor("walk %#x" % _value(argument or "$pc"))
        levels = [line for line in walk.splitlines() if re.match(r"\s+(PML4|PDPT|PD|PT)\s+\[", line)]
        if not levels:
            gdb.write(walk)
            return
        gdb.write(levels[-1].strip() + "\n")
        for line in walk.splitlines():
            if line.strip().startswith("->"):
                gdb.write(line.strip() + "\n")


Vmm()
VmmPte()
