# Connect gdb to vmm-host's stub and load the kernel's symbols.
#
#   vmm-host run --gdb 1234 --gdb-wait          (in one terminal)
#   gdb -x gdb/connect.gdb                       (in another, from the repository root)
#
# Another kernel or port: gdb -ex 'set $vmm_port = 4321' -ex 'file my-kernel.elf' -x gdb/connect.gdb
set confirm off
set pagination off
# The bundled guest-kernel, unless a `file` was given before this script.
python
import gdb, os
if gdb.current_progspace().filename is None:
    for path in ("target/guest-kernel/x86_64-unknown-none/release/guest-kernel",
                 "target/guest-kernel/x86_64-unknown-none/debug/guest-kernel"):
        if os.path.exists(path):
            gdb.execute("file " + path)
            break
port = gdb.parse_and_eval("$vmm_port")
port = 1234 if port.type.code == gdb.TYPE_CODE_VOID else int(port)
gdb.execute("target remote 127.0.0.1:%d" % port)
end
source gdb/vmm.py
