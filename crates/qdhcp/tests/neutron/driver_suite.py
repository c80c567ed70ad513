#!/usr/bin/env python3
"""Neutron's own DHCP driver against a dnsmasq binary, with real DHCP clients.

Drives the unmodified ``neutron.agent.linux.dhcp.Dnsmasq`` class from the ``neutron`` package
(scripts/neutron-venv installs it) the way the DHCP agent does -- oslo.config with the agent's
options registered, a privsep daemon, ``dhcp_confs`` in a temp dir, a fake ``DhcpPluginApi``
standing in for the Neutron server, the network as ``dhcp.NetModel`` -- and checks what real
clients (ISC dhclient, busybox udhcpc, plus a small DHCP probe for counting replies) get from the
server it spawns. The dnsmasq binary is the one given with --dnsmasq: a directory on PATH holds a
``dnsmasq`` wrapper that records its argv and execs that binary, and a ``dhcp_release`` wrapper
that records each call and execs /usr/bin/dhcp_release.

    .venv-neutron/bin/python crates/qdhcp/tests/neutron/driver_suite.py --dnsmasq /usr/sbin/dnsmasq
    ... --only enable,reload   ... --list   ... --restarts 3   ... --keep (leave the temp dir)

Topology (every name starts with "qt", at most 15 chars, all removed at exit):
  qtnh<tag>           "host" namespace holding the Linux bridge qtbr0
  qtnd<tag><NN>       the DHCP namespace of case NN (Neutron would say qdhcp-<network id>; the
                      harness sets network._ns_name, the attribute NetModel derives from
                      NS_PREFIX, because a 36-char id cannot fit in 15 chars)
  qtns<port[:10]>     the DHCP port's device in that namespace, plugged by QtVethDriver, a test
                      interface driver (Neutron 29 ships only OVS/Null drivers): a veth pair
                      whose other end qttp<port[:10]> is on qtbr0 in qtnh<tag>
  qtnv<tag><i>        VM namespaces, device qteth0 with the port's fa:16:3e MAC; the other end
                      qtvm<i> is on qtbr0

Output: one line per check, "PASS name" or "FAIL name: reason", INFO lines for what is recorded
but not asserted, and "N passed, M failed" last. Exit status 1 if anything failed. A check that
hits a known defect of the real dnsmasq (KNOWN_DEFECTS; today one: dnsmasq 2.90 segfaults on
SIGHUP after leasing to a tagged host line) prints "XFAIL name: ..." and counts in neither total
when the binary under test reports that dnsmasq version; for any other binary it is a normal check.

Needs root and: iproute2 isc-dhcp-client udhcpc dnsmasq-utils iptables (dnsutils for the DNS
INFO lines; dnsmasq-base for the control run). The agent's root helper is set to "env" (we are
root; oslo.privsep would otherwise prefix "sudo"), its process monitor checks every 5 s.

--server-log sets Neutron's dnsmasq_base_log_dir for every case, so the server logs each DHCP
exchange (--log-dhcp) under the kept temp dir: the first thing to read when a check fails.
"""

import argparse
import atexit
import copy
import ipaddress
import json
import logging
import os
import random
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
SELF = os.path.abspath(__file__)

# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


# Defects of the real dnsmasq that a check can hit. When the binary under test is that dnsmasq
# (its --version says so), such a check failing prints XFAIL, counted in neither total; for
# any other binary (qdhcp) it is an ordinary check.
KNOWN_DEFECTS = {
    'dnsmasq-2.90-hup-tag': (
        r'^Dnsmasq version 2\.90\s+Copyright',
        'dnsmasq 2.90 (Debian 12) segfaults on SIGHUP once it has leased an address to a '
        'dhcp-hostsfile line with a set: tag and a name (Neutron writes "mac,fqdn.,ip,'
        'set:port-ID" for every port with extra_dhcp_opts); the agent\'s process monitor '
        'respawns it. Reproduced without Neutron: --domain=openstacklocal, host line '
        '"fa:16:3e:00:00:04,host-172-16-1-104.openstacklocal.,172.16.1.104,set:port-abc", '
        'one DORA, kill -HUP -> SIGSEGV in libc'),
}


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0
        self.xfailed = 0
        self.failures = []
        self.version_text = ''

    def defect_applies(self, known):
        import re
        return bool(known) and bool(re.search(KNOWN_DEFECTS[known][0], self.version_text))

    def check(self, name, ok, reason='', known=None):
        reason = ' '.join(str(reason).split()) or 'failed'
        if len(reason) > 600:
            reason = reason[:600] + '...'
        if ok:
            self.passed += 1
            print(f'PASS {name}', flush=True)
        elif self.defect_applies(known):
            self.xfailed += 1
            print(f'XFAIL {name}: {reason} [known defect {known}]', flush=True)
        else:
            self.failed += 1
            self.failures.append((name, reason))
            print(f'FAIL {name}: {reason}', flush=True)
        return ok

    def eq(self, name, got, want):
        return self.check(name, got == want, f'got {got!r}, want {want!r}')

    @staticmethod
    def info(msg):
        print(f'INFO {msg}', flush=True)


R = Results()


class StepTimeout(Exception):
    pass


class Watchdog:
    """SIGALRM-based timeout around a blocking call into Neutron (it blocks in
    subprocess.communicate or privsep waits, both interruptible)."""

    def __init__(self, seconds, what):
        self.seconds, self.what = seconds, what

    def _fire(self, signum, frame):
        raise StepTimeout(f'{self.what} did not return within {self.seconds} s')

    def __enter__(self):
        self.old = signal.signal(signal.SIGALRM, self._fire)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.old)
        return False


# --------------------------------------------------------------------------------------------
# Small process / namespace helpers
# --------------------------------------------------------------------------------------------


def sh(*cmd, check=True, timeout=30, ns=None, capture=True):
    cmd = [str(c) for c in cmd]
    if ns:
        cmd = ['ip', 'netns', 'exec', ns] + cmd
    p = subprocess.run(cmd, capture_output=capture, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f'{shlex.join(cmd)} -> {p.returncode}: {p.stderr.strip()}')
    return p


def pid_alive(pid):
    if not pid:
        return False
    try:
        with open(f'/proc/{pid}/stat') as f:
            state = f.read().rsplit(')', 1)[1].split()[0]
        return state != 'Z'
    except OSError:
        return False


def proc_cmdline(pid):
    try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
            return [a.decode(errors='replace') for a in f.read().split(b'\0')[:-1]]
    except OSError:
        return None


def all_pids():
    return [int(d) for d in os.listdir('/proc') if d.isdigit()]


def netns_inode(ns):
    try:
        return os.stat(f'/run/netns/{ns}').st_ino
    except OSError:
        return None


def pids_in_netns(ns):
    ino = netns_inode(ns)
    if ino is None:
        return []
    out = []
    for pid in all_pids():
        try:
            if os.stat(f'/proc/{pid}/ns/net').st_ino == ino:
                out.append(pid)
        except OSError:
            pass
    return out


def pids_with_arg(text):
    """Live processes whose command line mentions text (the agent's liveness test)."""
    out = []
    for pid in all_pids():
        if pid == os.getpid():
            continue
        cl = proc_cmdline(pid)
        if cl and any(text in a for a in cl) and pid_alive(pid):
            out.append(pid)
    return out


def netns_exists(ns):
    return os.path.exists(f'/run/netns/{ns}')


def kill_pid(pid, sig=signal.SIGTERM):
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def wait_for(pred, timeout, step=0.05):
    end = time.time() + timeout
    while True:
        v = pred()
        if v or time.time() >= end:
            return v
        time.sleep(step)


def delete_netns(ns):
    """Kill whatever runs inside a namespace this harness created, then delete it."""
    if not netns_exists(ns):
        return
    pids = [p for p in pids_in_netns(ns) if p != os.getpid()]
    for p in pids:
        kill_pid(p, signal.SIGTERM)
    wait_for(lambda: not any(pid_alive(p) for p in pids), 3)
    for p in pids:
        if pid_alive(p):
            kill_pid(p, signal.SIGKILL)
    sh('ip', 'netns', 'del', ns, check=False)


# --------------------------------------------------------------------------------------------
# DHCP probe: builds DHCP packets itself so replies can be counted (run inside a VM namespace)
# --------------------------------------------------------------------------------------------

DHCP_TYPES = {1: 'DISCOVER', 2: 'OFFER', 3: 'REQUEST', 4: 'DECLINE', 5: 'ACK', 6: 'NAK',
              7: 'RELEASE', 8: 'INFORM'}
IP_PKTINFO = getattr(socket, 'IP_PKTINFO', 8)  # not exported by Python 3.11
PRL = [1, 3, 6, 12, 15, 26, 28, 42, 51, 54, 58, 59, 66, 67, 119, 121, 249]


def dhcp_packet(msgtype, mac, xid, broadcast, requested=None, server_id=None, ciaddr='0.0.0.0',
                client_id=None):
    chaddr = bytes.fromhex(mac.replace(':', ''))
    hdr = struct.pack('!BBBBIHH4s4s4s4s16s64s128s', 1, 1, 6, 0, xid, 0,
                      0x8000 if broadcast else 0, socket.inet_aton(ciaddr), bytes(4), bytes(4),
                      bytes(4), chaddr + bytes(10), bytes(64), bytes(128))
    opts = bytes([53, 1, msgtype])
    if client_id is not None:
        opts += bytes([61, len(client_id)]) + client_id
    if requested:
        opts += bytes([50, 4]) + socket.inet_aton(requested)
    if server_id:
        opts += bytes([54, 4]) + socket.inet_aton(server_id)
    opts += bytes([55, len(PRL)] + PRL) + bytes([255])
    return hdr + b'\x63\x82\x53\x63' + opts


def dhcp_parse(data):
    if len(data) < 240 or data[236:240] != b'\x63\x82\x53\x63':
        return None
    xid = struct.unpack('!I', data[4:8])[0]
    yiaddr = socket.inet_ntoa(data[16:20])
    chaddr = data[28:34].hex(':')
    opts, i = {}, 240
    while i < len(data):
        code = data[i]
        if code == 255:
            break
        if code == 0:
            i += 1
            continue
        ln = data[i + 1]
        opts[code] = data[i + 2:i + 2 + ln]
        i += 2 + ln
    mt = opts.get(53, b'\0')[0]
    return {'xid': xid, 'type': DHCP_TYPES.get(mt, str(mt)), 'yiaddr': yiaddr, 'chaddr': chaddr,
            'server_id': socket.inet_ntoa(opts[54]) if 54 in opts and len(opts[54]) == 4
            else None,
            'message': opts.get(56, b'').decode(errors='replace')}


def probe_main(spec):
    """Entry point of `driver_suite.py --probe JSON` (runs inside a VM namespace)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, spec['iface'].encode())
    s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    s.bind(('0.0.0.0', 68))
    xid = random.getrandbits(32)
    mt = {'discover': 1, 'request': 3}[spec['kind']]
    cid = bytes.fromhex(spec['client_id']) if spec.get('client_id') else None
    pkt = dhcp_packet(mt, spec['mac'], xid, spec.get('broadcast', True), spec.get('requested'),
                      spec.get('server_id'), client_id=cid)
    s.sendto(pkt, ('255.255.255.255', 67))
    replies = []
    end = time.time() + spec.get('wait', 2.0)
    while time.time() < end:
        s.settimeout(max(0.01, end - time.time()))
        try:
            data, anc, _flags, src = s.recvmsg(2048, 256)
        except socket.timeout:
            break
        r = dhcp_parse(data)
        if not r or r['xid'] != xid or r['chaddr'] != spec['mac'].lower():
            continue
        dst = None
        for lvl, typ, val in anc:
            if lvl == socket.IPPROTO_IP and typ == IP_PKTINFO:
                dst = socket.inet_ntoa(val[8:12])  # struct in_pktinfo: ifindex, spec_dst, addr
        r['src'] = src[0]
        r['dst'] = dst
        replies.append(r)
    print(json.dumps(replies))


# --------------------------------------------------------------------------------------------
# The VM helper: a namespace on the bridge, with real DHCP clients
# --------------------------------------------------------------------------------------------

DHCLIENT_CONF = """\
option rfc3442-classless-static-routes code 121 = array of unsigned integer 8;
option ms-classless-static-routes code 249 = array of unsigned integer 8;
timeout {timeout};
retry 1;
request subnet-mask, broadcast-address, routers, domain-name, domain-name-servers, host-name,
        ntp-servers, interface-mtu, rfc3442-classless-static-routes, ms-classless-static-routes,
        dhcp-lease-time, dhcp-renewal-time, dhcp-rebinding-time, bootfile-name, tftp-server-name;
"""

DHCLIENT_SCRIPT = """\
#!/bin/sh
echo "$reason" >> {out}.reasons
case "$reason" in
  BOUND|RENEW|REBIND|REBOOT)
    env | grep -E '^(new_|reason=|interface=)' | sort > {out}.tmp && mv {out}.tmp {out} ;;
esac
exit 0
"""

UDHCPC_SCRIPT = """\
#!/bin/sh
echo "$1" >> {out}.events
case "$1" in
  bound|renew)
    env | sort > {out}.tmp && mv {out}.tmp {out}
    if [ -n "$CONFIGURE" ]; then
      ip addr flush dev "$interface"
      ip addr add "$ip/$subnet" dev "$interface"
    fi ;;
  deconfig)
    [ -n "$CONFIGURE" ] && ip addr flush dev "$interface" ;;
esac
exit 0
"""


def decode_rfc3442(text):
    """'24 192 168 99 172 16 1 254 0 172 16 1 1' -> [('192.168.99.0/24', '172.16.1.254'), ...]"""
    if not text:
        return []
    b = [int(x) for x in text.replace(',', ' ').split()]
    out, i = [], 0
    while i < len(b):
        w = b[i]
        n = (w + 7) // 8
        dst = b[i + 1:i + 1 + n] + [0] * (4 - n)
        gw = b[i + 1 + n:i + 5 + n]
        out.append((f'{".".join(map(str, dst))}/{w}', '.'.join(map(str, gw))))
        i += 5 + n
    return out


def decode_udhcpc_routes(text):
    """'192.168.99.0/24 172.16.1.254 0.0.0.0/0 172.16.1.1' -> list of (dst, gw)"""
    if not text:
        return []
    t = text.split()
    return list(zip(t[0::2], t[1::2]))


class VM:
    """A 'VM': namespace qtnv<tag><i> with device qteth0 (the port's MAC) bridged to qtbr0."""

    IFACE = 'qteth0'

    def __init__(self, topo, index, mac):
        self.topo, self.index, self.mac = topo, index, mac
        self.ns = f'qtnv{topo.tag}{index}'
        self.host_end = f'qtvm{index}'
        self.dir = os.path.join(topo.tmp, self.ns)
        os.makedirs(self.dir, exist_ok=True)
        self.daemon = None
        if netns_exists(self.ns):
            raise RuntimeError(f'namespace {self.ns} already exists')
        sh('ip', 'netns', 'add', self.ns)
        topo.owned_ns.append(self.ns)
        sh('ip', '-n', self.ns, 'link', 'set', 'lo', 'up')
        sh('ip', '-n', topo.host_ns, 'link', 'add', self.host_end, 'type', 'veth', 'peer',
           'name', self.IFACE, 'netns', self.ns)
        sh('ip', '-n', topo.host_ns, 'link', 'set', self.host_end, 'master', topo.bridge, 'up')
        sh('ip', '-n', self.ns, 'link', 'set', self.IFACE, 'address', mac, 'up')
        # no IPv6 chatter from the VM, and don't let DAD/RS delay anything
        sh('ip', 'netns', 'exec', self.ns, 'sysctl', '-qw',
           f'net.ipv6.conf.{self.IFACE}.disable_ipv6=1', check=False)

    def destroy(self):
        self.stop_udhcpc_daemon()
        sh('ip', '-n', self.topo.host_ns, 'link', 'del', self.host_end, check=False)
        delete_netns(self.ns)
        if self.ns in self.topo.owned_ns:
            self.topo.owned_ns.remove(self.ns)

    def flush(self):
        sh('ip', '-n', self.ns, 'addr', 'flush', 'dev', self.IFACE, check=False)

    # -- ISC dhclient ---------------------------------------------------------------------------
    def dhclient(self, timeout=12, keep_lease_file=False):
        """One DORA (or INIT-REBOOT if keep_lease_file and a lease is there) with ISC dhclient
        in the foreground; returns the normalized lease or None."""
        out = os.path.join(self.dir, 'dhclient.env')
        for f in (out, out + '.reasons'):
            if os.path.exists(f):
                os.unlink(f)
        conf = os.path.join(self.dir, 'dhclient.conf')
        script = os.path.join(self.dir, 'dhclient.sh')
        leases = os.path.join(self.dir, 'dhclient.leases')
        if not keep_lease_file and os.path.exists(leases):
            os.unlink(leases)
        with open(conf, 'w') as f:
            f.write(DHCLIENT_CONF.format(timeout=timeout))
        with open(script, 'w') as f:
            f.write(DHCLIENT_SCRIPT.format(out=out))
        os.chmod(script, 0o755)
        log = open(os.path.join(self.dir, 'dhclient.log'), 'a')
        p = subprocess.Popen(['ip', 'netns', 'exec', self.ns, 'dhclient', '-4', '-d', '-v', '-1',
                              '-cf', conf, '-lf', leases,
                              '-pf', os.path.join(self.dir, 'dhclient.pid'), '-sf', script,
                              self.IFACE], stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: os.path.exists(out) or p.poll() is not None, timeout + 3, 0.05)
        finally:
            if p.poll() is None:
                p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            log.close()
        if not os.path.exists(out):
            return None
        env = {}
        with open(out) as f:
            for line in f:
                k, _, v = line.rstrip('\n').partition('=')
                env[k] = v.strip("'")

        def g(k):
            return env.get('new_' + k)

        def num(k):
            v = g(k)
            return int(v) if v and v.isdigit() else None
        return {
            'client': 'dhclient', 'reason': env.get('reason'),
            'ip': g('ip_address'), 'mask': g('subnet_mask'),
            'router': (g('routers') or '').split()[0] if g('routers') else None,
            'dns': (g('domain_name_servers') or '').split(),
            'domain': g('domain_name'), 'hostname': g('host_name'),
            'mtu': num('interface_mtu'), 'lease': num('dhcp_lease_time'),
            't1': num('dhcp_renewal_time'), 't2': num('dhcp_rebinding_time'),
            'routes121': decode_rfc3442(g('rfc3442_classless_static_routes')),
            'routes249': decode_rfc3442(g('ms_classless_static_routes')),
            'bootfile': g('bootfile_name') or g('filename'),
            'server_id': g('dhcp_server_identifier'), 'raw': env,
        }

    # -- busybox udhcpc -------------------------------------------------------------------------
    def _udhcpc_script(self, name):
        out = os.path.join(self.dir, name)
        script = out + '.sh'
        with open(script, 'w') as f:
            f.write(UDHCPC_SCRIPT.format(out=out))
        os.chmod(script, 0o755)
        for f in (out, out + '.events'):
            if os.path.exists(f):
                os.unlink(f)
        return out, script

    UDHCPC_OPTS = ['-O', 'mtu', '-O', 'staticroutes', '-O', 'msstaticroutes', '-O', 'domain',
                   '-O', 'dns', '-O', 'lease', '-O', 'bootfile', '-O', 'tftp', '-O', '58',
                   '-O', '59']

    def udhcpc(self, tries=4, configure=False, client_id_hex=None, requested=None, extra=()):
        """One-shot udhcpc (-q): DORA, quit; returns the normalized lease or None."""
        out, script = self._udhcpc_script('udhcpc')
        cmd = ['udhcpc', '-i', self.IFACE, '-f', '-q', '-n', '-t', str(tries), '-T', '1',
               '-A', '1', '-s', script] + self.UDHCPC_OPTS
        if client_id_hex:
            cmd += ['-C', '-x', f'0x3d:{client_id_hex}']
        if requested:
            cmd += ['-r', requested]
        cmd += list(extra)
        env = dict(os.environ, CONFIGURE='1' if configure else '')
        with open(os.path.join(self.dir, 'udhcpc.log'), 'a') as log:
            p = subprocess.Popen(['ip', 'netns', 'exec', self.ns] + cmd, env=env, stdout=log,
                                 stderr=subprocess.STDOUT)
            try:
                p.wait(tries * 2 + 6)
            except subprocess.TimeoutExpired:
                # e.g. OFFER then NAK forever: udhcpc -n never gives up; count it as no lease
                p.kill()
                p.wait()
                log.write('qt harness: udhcpc killed after timeout\n')
                self.last_events = open(out + '.events').read().split() \
                    if os.path.exists(out + '.events') else []
                return None
        self.last_events = open(out + '.events').read().split() \
            if os.path.exists(out + '.events') else []
        return self._read_udhcpc(out)

    @staticmethod
    def _read_udhcpc(out):
        if not os.path.exists(out):
            return None
        env = {}
        with open(out) as f:
            for line in f:
                k, _, v = line.rstrip('\n').partition('=')
                env[k] = v

        def num(k):
            v = env.get(k)
            return int(v) if v and v.isdigit() else None

        def hexnum(k):
            v = env.get(k)
            return int(v, 16) if v else None
        return {
            'client': 'udhcpc', 'ip': env.get('ip'), 'mask': env.get('subnet'),
            'router': (env.get('router') or '').split()[0] if env.get('router') else None,
            'dns': (env.get('dns') or '').split(), 'domain': env.get('domain'),
            'hostname': env.get('hostname'), 'mtu': num('mtu'), 'lease': num('lease'),
            't1': hexnum('opt58'), 't2': hexnum('opt59'),
            'routes121': decode_udhcpc_routes(env.get('staticroutes')),
            'routes249': decode_udhcpc_routes(env.get('msstaticroutes')),
            'bootfile': env.get('bootfile') or env.get('boot_file'),
            'server_id': env.get('serverid'), 'raw': env,
        }

    def start_udhcpc_daemon(self, timeout=10):
        """udhcpc kept running (like a VM's client) with the address configured; returns the
        lease once bound."""
        self.stop_udhcpc_daemon()
        out, script = self._udhcpc_script('udhcpcd')
        self.daemon_out = out
        cmd = ['ip', 'netns', 'exec', self.ns, 'udhcpc', '-i', self.IFACE, '-f', '-t', '5',
               '-T', '1', '-A', '2', '-s', script] + self.UDHCPC_OPTS
        log = open(os.path.join(self.dir, 'udhcpcd.log'), 'a')
        self.daemon = subprocess.Popen(cmd, env=dict(os.environ, CONFIGURE='1'), stdout=log,
                                       stderr=subprocess.STDOUT)
        log.close()
        wait_for(lambda: os.path.exists(out), timeout)
        return self._read_udhcpc(out)

    def renew_udhcpc_daemon(self, wait=4.0):
        """SIGUSR1 = renew now (unicast REQUEST to the server); returns the script events seen
        after it, e.g. ['renew'] or ['nak', 'deconfig', 'bound']."""
        ev = self.daemon_out + '.events'
        before = open(ev).read().split() if os.path.exists(ev) else []
        os.kill(self.daemon.pid, signal.SIGUSR1)
        time.sleep(wait)
        after = open(ev).read().split() if os.path.exists(ev) else []
        return after[len(before):], self._read_udhcpc(self.daemon_out)

    def stop_udhcpc_daemon(self):
        if self.daemon and self.daemon.poll() is None:
            self.daemon.terminate()
            try:
                self.daemon.wait(5)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        self.daemon = None

    # -- probe ----------------------------------------------------------------------------------
    def probe(self, kind='discover', wait=2.0, broadcast=True, requested=None, server_id=None,
              client_id_hex=None):
        spec = {'iface': self.IFACE, 'mac': self.mac, 'kind': kind, 'wait': wait,
                'broadcast': broadcast, 'requested': requested, 'server_id': server_id,
                'client_id': client_id_hex}
        p = sh(sys.executable, SELF, '--probe', json.dumps(spec), ns=self.ns,
               timeout=wait + 20)
        return json.loads(p.stdout.strip().splitlines()[-1])

    def dig(self, server, *query):
        if not shutil.which('dig'):
            return None
        p = sh('dig', '+short', '+time=1', '+tries=2', f'@{server}', *query, ns=self.ns,
               check=False, timeout=10)
        return (p.stdout.strip() or p.stderr.strip() or f'rc={p.returncode}').replace('\n', ' ')


# --------------------------------------------------------------------------------------------
# Topology: the host namespace and bridge everything plugs into
# --------------------------------------------------------------------------------------------


class Topology:
    def __init__(self, tmp):
        self.tmp = tmp
        existing = sh('ip', 'netns', 'list', check=False).stdout
        while True:  # a tag no existing namespace uses
            self.tag = '%04x' % random.getrandbits(16)
            if not any(f'qtn{k}{self.tag}' in existing for k in 'hdv'):
                break
        self.host_ns = f'qtnh{self.tag}'
        self.bridge = 'qtbr0'
        self.owned_ns = []
        self.dhcp_namespaces = []
        self.vm_count = 0

    def next_vm_index(self):
        self.vm_count += 1
        return self.vm_count

    def up(self):
        sh('ip', 'netns', 'add', self.host_ns)
        self.owned_ns.append(self.host_ns)
        sh('ip', '-n', self.host_ns, 'link', 'set', 'lo', 'up')
        sh('ip', '-n', self.host_ns, 'link', 'add', self.bridge, 'type', 'bridge',
           'forward_delay', '0')
        sh('ip', '-n', self.host_ns, 'link', 'set', self.bridge, 'type', 'bridge',
           'mcast_snooping', '0', check=False)
        sh('ip', '-n', self.host_ns, 'link', 'set', self.bridge, 'up')

    def dhcp_ns(self, case_index):
        name = f'qtnd{self.tag}{case_index:02d}'
        if name not in self.dhcp_namespaces:
            self.dhcp_namespaces.append(name)
        return name

    def teardown(self):
        """Remove exactly the namespaces this run made (VMs, host) or had Neutron make."""
        for ns in reversed(self.dhcp_namespaces + self.owned_ns):
            delete_netns(ns)
        self.owned_ns = []


# --------------------------------------------------------------------------------------------
# Neutron: conf, privsep, logging, the test interface driver, the fake plugin
# --------------------------------------------------------------------------------------------

N = None  # namespace object holding the imported neutron modules


class LogCapture(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records = []

    def emit(self, record):
        try:
            self.records.append((record.levelname, record.name, record.getMessage()))
        except Exception:
            pass

    def mark(self):
        return len(self.records)

    def since(self, mark, needle=None):
        return [r for r in self.records[mark:] if needle is None or needle in r[2]]


CAPTURE = LogCapture()


def load_neutron(tmp, topo):
    """Import Neutron and set it up as neutron-dhcp-agent's main() does."""
    global N
    import warnings
    warnings.filterwarnings('ignore')
    from oslo_config import cfg
    from neutron.agent import dhcp_agent
    from neutron.agent.linux import dhcp, external_process, interface
    from neutron.conf.agent import common as agent_config

    logging.basicConfig(filename=os.path.join(tmp, 'neutron.log'), level=logging.DEBUG,
                        format='%(asctime)s %(levelname)s %(name)s %(message)s')
    logging.getLogger().addHandler(CAPTURE)

    dhcp_agent.register_options(cfg.CONF)
    cfg.CONF(args=[], project='neutron', default_config_files=[])
    cfg.CONF.set_override('host', 'qt-harness')
    cfg.CONF.set_override('state_path', tmp)
    cfg.CONF.set_override('dhcp_confs', os.path.join(tmp, 'dhcp'))
    cfg.CONF.set_override('external_pids', os.path.join(tmp, 'external', 'pids'))
    cfg.CONF.set_override('interface_driver', '__main__.QtVethDriver')
    cfg.CONF.set_override('lock_path', os.path.join(tmp, 'lock'), 'oslo_concurrency')
    # We are root: the root helper is a no-op. It must be a non-empty command, since oslo.privsep
    # falls back to "sudo" for an empty one; env keeps PATH (our wrappers) for the privsep daemon.
    cfg.CONF.set_override('root_helper', 'env', 'AGENT')
    # the agent's process monitor, checking every 5 s instead of 60 (its thread sleeps a whole
    # interval before it notices stop(), which would hold the exit)
    cfg.CONF.set_override('check_child_processes_interval', 5, 'AGENT')
    agent_config.setup_privsep()

    class QtVethDriver(interface.LinuxInterfaceDriver):
        """Test interface driver (Neutron 29 has no Linux-bridge driver): the DHCP port is a
        veth pair, qtns<port[:10]> in the DHCP namespace and qttp<port[:10]> on the test bridge
        in the host namespace. Everything else (init_l3, routes, MTU) is Neutron's."""
        DEV_NAME_PREFIX = 'qtns'

        def __init__(self, conf, get_networks_callback=None, **kwargs):
            super().__init__(conf)

        @staticmethod
        def _host_end(device_name):
            return 'qttp' + device_name[len(QtVethDriver.DEV_NAME_PREFIX):]

        def plug_new(self, network_id, port_id, device_name, mac_address, bridge=None,
                     namespace=None, prefix=None, mtu=None, link_up=True):
            host_end = self._host_end(device_name)
            sh('ip', '-n', topo.host_ns, 'link', 'add', host_end, 'type', 'veth', 'peer',
               'name', device_name, 'netns', namespace)
            sh('ip', '-n', namespace, 'link', 'set', device_name, 'address', mac_address)
            if mtu:
                sh('ip', '-n', namespace, 'link', 'set', device_name, 'mtu', mtu)
                sh('ip', '-n', topo.host_ns, 'link', 'set', host_end, 'mtu', mtu)
            sh('ip', '-n', topo.host_ns, 'link', 'set', host_end, 'master', topo.bridge, 'up')
            if link_up:
                sh('ip', '-n', namespace, 'link', 'set', device_name, 'up')

        def unplug(self, device_name, bridge=None, namespace=None, prefix=None):
            sh('ip', '-n', namespace, 'link', 'del', device_name, check=False)

        def set_mtu(self, device_name, mtu, namespace=None, prefix=None):
            sh('ip', '-n', namespace, 'link', 'set', device_name, 'mtu', mtu, check=False)
            sh('ip', '-n', topo.host_ns, 'link', 'set', self._host_end(device_name), 'mtu', mtu,
               check=False)

    sys.modules['__main__'].QtVethDriver = QtVethDriver

    class NS:
        pass
    N = NS()
    N.cfg, N.dhcp, N.external_process = cfg, dhcp, external_process
    N.monitor = external_process.ProcessMonitor(config=cfg.CONF, resource_type='dhcp')
    return N


class FakePluginApi:
    """Stands in for the agent's DhcpPluginApi (there is no Neutron server): allocates the
    DHCP port's addresses from the subnets' allocation pools as the server would."""

    def __init__(self, net):
        self.net = net  # the network dict (subnets, ports) as the "server" knows it
        self.calls = []

    def _alloc(self, subnet_id):
        sub = next(s for s in self.net['subnets'] if s['id'] == subnet_id)
        used = {ip['ip_address'] for p in self.net['ports'] for ip in p['fixed_ips']}
        used |= {ip['ip_address'] for p in self.net.get('_dhcp_ports', [])
                 for ip in p['fixed_ips']}
        for pool in sub['allocation_pools']:
            a = ipaddress.ip_address(pool['start'])
            while a <= ipaddress.ip_address(pool['end']):
                if str(a) not in used and str(a) != sub['gateway_ip']:
                    return str(a)
                a += 1
        raise RuntimeError('pool exhausted')

    def create_dhcp_port(self, port):
        self.calls.append(('create_dhcp_port', port))
        body = dict(port['port'])
        fixed = []
        for f in body.get('fixed_ips', []):
            fixed.append({'subnet_id': f['subnet_id'],
                          'ip_address': f.get('ip_address') or self._alloc(f['subnet_id'])})
        p = {'id': str(uuid.uuid4()), 'name': '', 'network_id': body['network_id'],
             'mac_address': random_mac(), 'fixed_ips': fixed,
             'device_id': body['device_id'], 'device_owner': 'network:dhcp',
             'admin_state_up': True, 'project_id': body.get('project_id'),
             'extra_dhcp_opts': [], 'binding:host_id': 'qt-harness'}
        self.net.setdefault('_dhcp_ports', []).append(p)
        return N.dhcp.DictModel(p)

    def update_dhcp_port(self, port_id, port):
        self.calls.append(('update_dhcp_port', port_id, port))
        for p in self.net.get('_dhcp_ports', []):
            if p['id'] == port_id:
                body = port['port']
                if 'fixed_ips' in body:
                    p['fixed_ips'] = [{'subnet_id': f['subnet_id'],
                                       'ip_address': f.get('ip_address') or
                                       self._alloc(f['subnet_id'])} for f in body['fixed_ips']]
                if 'device_id' in body:
                    p['device_id'] = body['device_id']
                return N.dhcp.DictModel(p)
        return None

    def get_dhcp_port(self, port_id):
        for p in self.net.get('_dhcp_ports', []):
            if p['id'] == port_id:
                return N.dhcp.DictModel(p)

    def release_dhcp_port(self, network_id, device_id):
        self.calls.append(('release_dhcp_port', network_id, device_id))
        self.net['_dhcp_ports'] = [p for p in self.net.get('_dhcp_ports', [])
                                   if p['device_id'] != device_id]

    def get_ports(self, port_filters=None):
        return []  # no OVN metadata port

    def get_networks(self, filters=None, fields=None):
        return []

    def get_network_info(self, network_id):
        return None


def random_mac():
    return 'fa:16:3e:%02x:%02x:%02x' % tuple(random.getrandbits(8) for _ in range(3))


# --------------------------------------------------------------------------------------------
# A network under test: the dicts, the NetModel, the Dnsmasq driver, its VMs
# --------------------------------------------------------------------------------------------

NET1 = {'cidr': '172.16.1.0/24', 'gateway_ip': '172.16.1.1',
        'allocation_pools': [{'start': '172.16.1.2', 'end': '172.16.1.200'}],
        'dns_nameservers': ['192.0.2.53'],
        'host_routes': [{'destination': '192.168.99.0/24', 'nexthop': '172.16.1.254'}]}
NET2 = {'cidr': '172.16.2.0/24', 'gateway_ip': '172.16.2.1',
        'allocation_pools': [{'start': '172.16.2.2', 'end': '172.16.2.200'}],
        'dns_nameservers': ['192.0.2.54'], 'host_routes': []}


def subnet_dict(net_id, spec, **over):
    d = {'id': str(uuid.uuid4()), 'network_id': net_id, 'name': '', 'ip_version': 4,
         'enable_dhcp': True, 'ipv6_address_mode': None, 'ipv6_ra_mode': None,
         'subnetpool_id': None, 'segment_id': None, 'project_id': 'qt-project'}
    d.update(spec)
    d.update(over)
    return d


class Net:
    """One Neutron network served by one Dnsmasq driver instance, plus its VMs."""

    def __init__(self, suite, subnets=(NET1,), mtu=1450, subnet_over=None):
        self.suite, self.topo = suite, suite.topo
        self.id = str(uuid.uuid4())
        self.ns = self.topo.dhcp_ns(suite.case_index)
        self.net = {'id': self.id, 'name': f'qt-{suite.case}', 'project_id': 'qt-project',
                    'tenant_id': 'qt-project', 'admin_state_up': True, 'mtu': mtu,
                    'subnets': [subnet_dict(self.id, s, **(subnet_over or {}))
                                for s in subnets],
                    'ports': [], 'non_local_subnets': []}
        self.plugin = FakePluginApi(self.net)
        self.vms = {}
        self.model = self._model()
        self.driver = N.dhcp.Dnsmasq(N.cfg.CONF, self.model, N.monitor, version=None,
                                     plugin=self.plugin)

    def _model(self):
        m = N.dhcp.NetModel({k: v for k, v in self.net.items() if not k.startswith('_')})
        # Neutron derives the namespace from NS_PREFIX + id ("qdhcp-<36 chars>"); the qt
        # naming rule (<= 15 chars) needs a short one. NetModel keeps it in _ns_name.
        m._ns_name = self.ns
        return m

    # -- ports, kept in the NetModel in place as the agent's NetworkCache does -------------
    def add_port(self, ip, subnet_index=0, extra_dhcp_opts=None, mac=None, dns_name=''):
        p = {'id': str(uuid.uuid4()), 'name': '', 'network_id': self.id,
             'mac_address': mac or random_mac(), 'admin_state_up': True,
             'device_owner': 'compute:nova', 'device_id': str(uuid.uuid4()),
             'fixed_ips': [{'subnet_id': self.net['subnets'][subnet_index]['id'],
                            'ip_address': ip}],
             'extra_dhcp_opts': [dict(o) for o in (extra_dhcp_opts or [])],
             'dns_name': dns_name, 'binding:host_id': 'qt-compute'}
        self._dns_assignment(p)
        self.net['ports'].append(p)
        self.model.ports.append(N.dhcp.DictModel(copy.deepcopy(p)))
        return p

    @staticmethod
    def _dns_assignment(p):
        """What the Neutron server's dns extension puts on a port (FQDN with the final dot)."""
        dom = N.cfg.CONF.dns_domain
        p['dns_assignment'] = []
        for f in p['fixed_ips']:
            h = p['dns_name'] or host_name(f['ip_address'])
            p['dns_assignment'].append({'hostname': h, 'ip_address': f['ip_address'],
                                        'fqdn': f'{h}.{dom}.' if dom else h})

    def update_port(self, port, ip=None, extra_dhcp_opts=None):
        """A port update as the agent's NetworkCache applies it: the port object is replaced."""
        if ip is not None:
            port['fixed_ips'][0]['ip_address'] = ip
            self._dns_assignment(port)
        if extra_dhcp_opts is not None:
            port['extra_dhcp_opts'] = [dict(o) for o in extra_dhcp_opts]
        self.model.ports[:] = [N.dhcp.DictModel(copy.deepcopy(port)) if m.id == port['id']
                               else m for m in self.model.ports]

    def update_subnet(self, index, **changes):
        self.net['subnets'][index].update(changes)
        self.model.subnets[index] = N.dhcp.DictModel(copy.deepcopy(self.net['subnets'][index]))

    def set_port_ip(self, port, ip):
        self.update_port(port, ip=ip)

    def remove_port(self, port):
        self.net['ports'].remove(port)
        self.model.ports[:] = [m for m in self.model.ports if m.id != port['id']]

    def vm(self, port):
        v = VM(self.topo, self.topo.next_vm_index(), port['mac_address'])
        v.port = port
        self.vms[port['id']] = v
        return v

    @property
    def dhcp_ip(self):
        return self.dhcp_ips[0]

    @property
    def dhcp_ips(self):
        return [ip['ip_address'] for p in self.net.get('_dhcp_ports', [])
                for ip in p['fixed_ips']]

    # -- driver calls, each under a watchdog ---------------------------------------------------
    def call(self, what, timeout=90, **kw):
        mark = self.suite.wrappers.argv_mark()
        with Watchdog(timeout, f'Dnsmasq.{what}()'):
            getattr(self.driver, what)(**kw)
        return mark

    def conf_file(self, kind):
        return self.driver.get_conf_file_name(kind)

    @property
    def conf_dir(self):
        return self.driver.network_conf_dir

    def pid(self):
        try:
            with open(self.conf_file('pid')) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def server_pids(self):
        """Processes in the DHCP namespace whose command line carries the network id."""
        return [p for p in pids_in_netns(self.ns)
                if any(self.id in a for a in (proc_cmdline(p) or [])) and pid_alive(p)]

    def destroy(self):
        for v in self.vms.values():
            v.destroy()
        self.vms = {}
        try:
            if self.driver.active:
                with Watchdog(30, 'cleanup disable()'):
                    self.driver.disable()
        except Exception as e:  # noqa: BLE001
            R.info(f'{self.suite.case}: cleanup disable() raised {e!r}')
        for p in self.server_pids():
            kill_pid(p, signal.SIGKILL)
        delete_netns(self.ns)


# --------------------------------------------------------------------------------------------
# The PATH wrappers
# --------------------------------------------------------------------------------------------


class Wrappers:
    def __init__(self, tmp, dnsmasq):
        self.bin = os.path.join(tmp, 'bin')
        os.makedirs(self.bin)
        self.argv_log = os.path.join(tmp, 'dnsmasq-argv.log')
        self.release_log = os.path.join(tmp, 'dhcp_release.log')
        real_release = shutil.which('dhcp_release', path='/usr/bin:/usr/sbin:/bin:/sbin')
        if not real_release:
            raise SystemExit('dhcp_release not found: apt-get install dnsmasq-utils')
        self._write('dnsmasq', f"""#!/bin/bash
# qt harness: record the command line Neutron built, then run the dnsmasq under test
{{ printf '%q ' dnsmasq "$@"; echo; }} >> {shlex.quote(self.argv_log)}
exec {shlex.quote(dnsmasq)} "$@"
""")
        self._write('dhcp_release', f"""#!/bin/bash
# qt harness: count Neutron's dhcp_release calls (args: iface ip mac [client-id])
echo "$(date +%s.%N) $*" >> {shlex.quote(self.release_log)}
exec {shlex.quote(real_release)} "$@"
""")
        real_release6 = shutil.which('dhcp_release6', path='/usr/bin:/usr/sbin')
        if real_release6:
            self._write('dhcp_release6', f'#!/bin/sh\nexec {real_release6} "$@"\n')

    def _write(self, name, text):
        path = os.path.join(self.bin, name)
        with open(path, 'w') as f:
            f.write(text)
        os.chmod(path, 0o755)

    def argv_lines(self):
        try:
            with open(self.argv_log) as f:
                return f.read().splitlines()
        except OSError:
            return []

    def argv_mark(self):
        return len(self.argv_lines())

    def argv_since(self, mark):
        return self.argv_lines()[mark:]

    def release_lines(self):
        try:
            with open(self.release_log) as f:
                return [ln.split()[1:] for ln in f.read().splitlines()]
        except OSError:
            return []


# --------------------------------------------------------------------------------------------
# Shared checks
# --------------------------------------------------------------------------------------------


def check_running(name, net):
    """What the agent relies on: pid file -> live process whose cmdline holds the network
    id, inside the DHCP namespace; Dnsmasq.active agrees."""
    pid = net.pid()
    ok = R.check(f'{name}.pid_file', pid is not None and pid_alive(pid),
                 f'pid file {net.conf_file("pid")} -> {pid!r}, alive={pid_alive(pid)}')
    cl = proc_cmdline(pid) if pid else None
    R.check(f'{name}.cmdline_has_network_id', bool(cl) and any(net.id in a for a in cl),
            f'/proc/{pid}/cmdline = {cl!r}')
    R.check(f'{name}.active', net.driver.active, 'Dnsmasq.active is False')
    if ok:
        R.check(f'{name}.in_namespace', pid in pids_in_netns(net.ns),
                f'pid {pid} is not in namespace {net.ns}')
    return pid


def check_lease(name, lease, port, net, subnet=0, **want):
    """Address and the standard options a cloud image relies on."""
    sub = net.net['subnets'][subnet]
    cidr = ipaddress.ip_network(sub['cidr'])
    if not R.check(f'{name}.lease', lease is not None and lease.get('ip') is not None,
                   f'no lease for {port["mac_address"]}'):
        return False
    R.eq(f'{name}.address', lease['ip'], port['fixed_ips'][0]['ip_address'])
    R.eq(f'{name}.mask', lease['mask'], str(cidr.netmask))
    R.eq(f'{name}.router', lease['router'], want.get('router', sub['gateway_ip']))
    R.eq(f'{name}.dns', lease['dns'], want.get('dns', sub['dns_nameservers']))
    R.eq(f'{name}.domain', lease['domain'], want.get('domain', 'openstacklocal'))
    R.eq(f'{name}.mtu', lease['mtu'], want.get('mtu', net.net['mtu']))
    R.eq(f'{name}.lease_time', lease['lease'], want.get('lease', 86400))
    if 'routes' in want:
        R.eq(f'{name}.classless_routes_121', lease['routes121'], want['routes'])
        R.eq(f'{name}.classless_routes_249', lease['routes249'], want['routes'])
    if 'hostname' in want:
        R.eq(f'{name}.hostname', lease['hostname'], want['hostname'])
    return True


def host_name(ip):
    return 'host-' + ip.replace('.', '-')


def base_routes(sub=NET1, extra=()):
    routes = list(extra) + [(r['destination'], r['nexthop']) for r in sub['host_routes']]
    return routes + [('0.0.0.0/0', sub['gateway_ip'])]


def leases_file_has(net, mac, ip, written=False):
    """The lease line for mac/ip; written=True skips Neutron's pre-seeded '0 mac ip * *'."""
    try:
        with open(net.conf_file('leases')) as f:
            for line in f:
                t = line.split()
                if len(t) >= 3 and t[1].lower() == mac.lower() and t[2] == ip and \
                        not (written and t[0] == '0'):
                    return t
    except OSError:
        pass
    return None


def cmdline_args(net, mark):
    """The argv the dnsmasq wrapper recorded for the (last) spawn since mark."""
    lines = net.suite.wrappers.argv_since(mark)
    return shlex.split(lines[-1]) if lines else []


def normalize_args(args, net):
    out = []
    for a in args:
        a = a.replace(net.conf_dir, '$CONF').replace(net.suite.tmp, '$TMP')
        a = a.replace(net.id, '$NET')
        for i, sub in enumerate(net.net['subnets']):
            a = a.replace(sub['id'], f'$SUBNET{i}')
        out.append(a)
    return out


def check_args(name, args, *expected):
    for e in expected:
        R.check(f'{name}.arg[{e}]', e in args, f'{e!r} not in Neutron\'s command line {args}')


def check_alive_after(name, net, secs=1.0):
    pid = net.pid()
    time.sleep(secs)
    return R.check(f'{name}.still_running', pid_alive(pid) and net.driver.active,
                   f'pid {pid} gone {secs} s after enable (did it reject an option?)')


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------


def case_enable(s):
    net = Net(s)
    p1 = net.add_port('172.16.1.103')
    vm1 = net.vm(p1)
    mark = net.call('enable')
    args = cmdline_args(net, mark)
    R.check('enable.spawned_once', len(s.wrappers.argv_since(mark)) == 1,
            f'dnsmasq executed {len(s.wrappers.argv_since(mark))} times by enable()')
    R.info('Neutron 29 dnsmasq command line (run with the root helper, here "env"): '
           f'ip netns exec {net.ns} env PROCESS_TAG=dnsmasq-{net.id} {shlex.join(args)}')
    s.base_args, s.base_net = args, net
    check_running('enable', net)
    for kind in ('host', 'addn_hosts', 'opts', 'leases', 'interface'):
        R.check(f'enable.conf_file[{kind}]', os.path.exists(net.conf_file(kind)),
                f'{net.conf_file(kind)} missing')
    if not any(a.startswith('--interface') for a in args):
        R.info('enable: Neutron 29 passes no --interface: the server must serve every '
               'interface of the namespace but lo')
    routes = base_routes()
    lease = vm1.dhclient()
    check_lease('enable.vm1.dhclient', lease, p1, net, routes=routes,
                hostname=host_name('172.16.1.103'))
    if lease:
        R.eq('enable.vm1.dhclient.server_id', lease['server_id'], net.dhcp_ip)
    t0 = time.time()
    seen = wait_for(lambda: leases_file_has(net, p1['mac_address'], '172.16.1.103', True), 3)
    R.info(f'enable: the ACKed lease was in the leases file {time.time() - t0:.2f} s after '
           'dhclient got the ACK')
    R.check('enable.leases_file_has_vm1', seen,
            f'{net.conf_file("leases")} has no lease line for {p1["mac_address"]} after the ACK'
            f' (Neutron reads it to release leases): {open(net.conf_file("leases")).read()!r}')
    lease = vm1.udhcpc(configure=True)
    check_lease('enable.vm1.udhcpc', lease, p1, net, routes=routes,
                hostname=host_name('172.16.1.103'))
    offers = vm1.probe('discover')
    R.check('enable.one_offer', len([r for r in offers if r['type'] == 'OFFER']) == 1,
            f'replies to one DISCOVER: {offers}')
    # DNS at the DHCP port, from the addn_hosts file Neutron wrote: FQDN, bare name, PTR
    R.eq('enable.dns.fqdn', vm1.dig(net.dhcp_ip, host_name('172.16.1.103') + '.openstacklocal'),
         '172.16.1.103')
    R.eq('enable.dns.bare_name', vm1.dig(net.dhcp_ip, host_name('172.16.1.103')), '172.16.1.103')
    R.eq('enable.dns.ptr', vm1.dig(net.dhcp_ip, '-x', '172.16.1.103'),
         host_name('172.16.1.103') + '.openstacklocal.')
    # an unknown MAC gets nothing (static ranges only)
    stranger = VM(s.topo, s.topo.next_vm_index(), random_mac())
    try:
        R.check('enable.unknown_mac_ignored', not [r for r in stranger.probe('discover')
                                                   if r['type'] == 'OFFER'],
                'an unknown MAC got an OFFER')
    finally:
        stranger.destroy()
    net.destroy()


def reload_and_check_survival(s, net, name):
    """reload_allocations(); the server must take the SIGHUP and keep its pid. If it died, wait
    (as the agent does) for the process monitor to respawn it before going on."""
    pid = net.pid()
    mark = net.call('reload_allocations')
    time.sleep(0.5)
    ok = pid_alive(pid) and net.pid() == pid and not s.wrappers.argv_since(mark)
    R.check(f'{name}.survives_sighup', ok,
            f'pid {pid} alive={pid_alive(pid)}, pid file now {net.pid()}',
            known='dnsmasq-2.90-hup-tag')
    if not ok:
        s.expected_respawns.add(net.id)
        back = wait_for(lambda: net.pid() != pid and pid_alive(net.pid()), 15, 0.2)
        R.info(f'{name}: server died on SIGHUP; process monitor respawned it: {bool(back)} '
               f'(pid {net.pid()})')


def releases_for(s, before, ip):
    return [a for a in s.wrappers.release_lines()[before:] if len(a) > 1 and a[1] == ip]


def case_reload(s):
    net = Net(s)
    p1 = net.add_port('172.16.1.103')
    vm1 = net.vm(p1)
    net.call('enable')
    pid0 = net.pid()
    check_lease('reload.initial.vm1', vm1.udhcpc(), p1, net)

    # add a port
    p2 = net.add_port('172.16.1.104')
    vm2 = net.vm(p2)
    mark = net.call('reload_allocations')
    R.check('reload.add.no_respawn', not s.wrappers.argv_since(mark) and net.pid() == pid0,
            f'reload_allocations re-executed dnsmasq (pid {pid0} -> {net.pid()})')
    check_running('reload.add', net)
    check_lease('reload.add.vm2', vm2.udhcpc(), p2, net)

    # change a port's extra_dhcp_opts, then a subnet's DNS servers (both only in the opts file)
    # (a port with extra_dhcp_opts gets "set:port-ID" on its host line: dnsmasq 2.90 crashes
    # on the SIGHUP after such a host got a lease, see KNOWN_DEFECTS)
    net.update_port(p2, extra_dhcp_opts=[{'opt_name': 'mtu', 'opt_value': '1300',
                                          'ip_version': 4}])
    reload_and_check_survival(s, net, 'reload.port_opts')
    check_lease('reload.port_opts.vm2', vm2.udhcpc(), p2, net, mtu=1300)
    net.update_subnet(0, dns_nameservers=['192.0.2.99', '192.0.2.98'])
    reload_and_check_survival(s, net, 'reload.subnet_dns')
    check_lease('reload.subnet_dns.vm2', vm2.udhcpc(), p2, net, mtu=1300)
    net.update_port(p2, extra_dhcp_opts=[])
    reload_and_check_survival(s, net, 'reload.port_opts_removed')
    check_lease('reload.port_opts_removed.vm2', vm2.udhcpc(), p2, net)

    # change a port's address; VM2 holds its lease with a running client
    held = vm2.start_udhcpc_daemon()
    R.eq('reload.change.vm2_bound_before', held and held['ip'], '172.16.1.104')
    R.info('reload.change: old lease in the leases file when Neutron reloads: '
           f'{leases_file_has(net, p2["mac_address"], "172.16.1.104", True)} '
           '(Neutron only dhcp_releases leases it finds there)')
    rel0 = len(s.wrappers.release_lines())
    m0 = CAPTURE.mark()
    net.set_port_ip(p2, '172.16.1.114')
    net.call('reload_allocations')
    events, renewed = vm2.renew_udhcpc_daemon()
    R.info(f'reload.change: running client renewing 172.16.1.104 saw {events} -> '
           f'{renewed and renewed["ip"]}')
    vm2.stop_udhcpc_daemon()
    vm2.flush()
    rep = vm2.probe('request', requested='172.16.1.104')
    R.check('reload.change.old_ip_not_acked', not [r for r in rep if r['type'] == 'ACK'],
            f'INIT-REBOOT REQUEST for the old 172.16.1.104 was ACKed: {rep}')
    R.info(f'reload.change: INIT-REBOOT for old IP -> {[(r["type"], r["message"]) for r in rep]}')
    lease = vm2.udhcpc()
    check_lease('reload.change.vm2', lease, p2, net)
    R.info(f'reload.change: dhcp_release calls for 172.16.1.104: '
           f'{len(releases_for(s, rel0, "172.16.1.104"))}; "Could not release" logged: '
           f'{bool(CAPTURE.since(m0, "Could not release DHCP leases"))}')

    # remove a port whose VM holds a lease
    R.check('reload.remove.vm1_lease_in_file',
            wait_for(lambda: leases_file_has(net, p1['mac_address'], '172.16.1.103', True), 3),
            'vm1 has no lease in the leases file before its port is removed')
    rel0 = len(s.wrappers.release_lines())
    m0 = CAPTURE.mark()
    t0 = time.time()
    net.remove_port(p1)
    net.call('reload_allocations')
    took = time.time() - t0
    calls = releases_for(s, rel0, '172.16.1.103')
    warned = CAPTURE.since(m0, 'Could not release DHCP leases')
    R.info(f'reload.remove: dhcp_release invoked {len(calls)} time(s) for the removed port '
           f'({calls}); reload_allocations took {took:.2f} s; "Could not release DHCP leases" '
           f'logged: {bool(warned)}{" " + warned[0][2] if warned else ""}')
    R.check('reload.remove.dhcp_release_called', len(calls) >= 1,
            'Neutron did not call dhcp_release for the removed port')
    # the released lease leaves the leases file before Neutron re-reads it 0.3 s later: one
    # round of dhcp_release, no "Could not release" (each further round costs 0.3 s)
    R.check('reload.remove.no_release_warning', not warned, f'{warned}')
    # one round releases each lease entry once (with and without the client id: 2 calls);
    # each further round repeats them after another 0.3 s
    R.check('reload.remove.one_release_round', len(calls) <= 2,
            f'{len(calls)} dhcp_release calls ({calls}): more than one release round')
    R.check('reload.remove.lease_gone_from_file',
            wait_for(lambda: not leases_file_has(net, p1['mac_address'], '172.16.1.103'), 2),
            'the removed port\'s lease is still in the leases file 2 s after reload')
    rep = vm1.probe('request', requested='172.16.1.103')
    R.check('reload.remove.renew_not_acked', not [r for r in rep if r['type'] == 'ACK'],
            f'INIT-REBOOT REQUEST of the removed port was ACKed: {rep}')
    R.info(f'reload.remove: INIT-REBOOT of removed port -> '
           f'{[(r["type"], r["message"]) for r in rep] or "silence"}')
    R.check('reload.remove.vm1_no_lease', vm1.udhcpc(tries=3) is None,
            'the removed port\'s VM still gets a lease')
    check_running('reload.remove', net)
    check_lease('reload.remove.vm2_still_served', vm2.udhcpc(), p2, net)
    net.destroy()


def case_restart(s):
    net = Net(s)
    p1 = net.add_port('172.16.1.103')
    vm1 = net.vm(p1)
    net.call('enable')
    check_lease('restart.initial.vm1', vm1.udhcpc(), p1, net)
    prev = net.pid()
    for i in range(1, s.args.restarts + 1):
        n = f'restart[{i}]'
        try:
            mark = net.call('restart')
        except StepTimeout as e:
            R.check(f'{n}.returns', False, str(e))
            break
        R.check(f'{n}.spawned_once', len(s.wrappers.argv_since(mark)) == 1,
                f'dnsmasq executed {len(s.wrappers.argv_since(mark))} times')
        pid = check_running(n, net)
        R.check(f'{n}.new_process', pid != prev and not pid_alive(prev),
                f'old pid {prev} alive={pid_alive(prev)}, new pid {pid}')
        procs = net.server_pids()
        R.check(f'{n}.one_server_process', len(procs) == 1,
                f'processes with the network id in {net.ns}: '
                f'{[(p, " ".join(proc_cmdline(p) or [])[:80]) for p in procs]}')
        offers = [r for r in vm1.probe('discover', wait=1.5) if r['type'] == 'OFFER']
        R.check(f'{n}.one_offer', len(offers) == 1, f'OFFERs to one DISCOVER: {offers}')
        lease = vm1.udhcpc()
        R.check(f'{n}.vm1_lease', lease is not None and lease['ip'] == '172.16.1.103',
                f'lease {lease and lease["ip"]}')
        prev = pid
    net.destroy()


def case_disable(s):
    net = Net(s)
    p1 = net.add_port('172.16.1.103')
    vm1 = net.vm(p1)
    net.call('enable')
    check_lease('disable.before.vm1', vm1.udhcpc(), p1, net)
    pid = net.pid()
    conf_dir = net.conf_dir
    net.call('disable')
    # (no Dnsmasq.active here: building its ProcessManager re-creates the conf dir)
    R.check('disable.conf_dir_removed', not os.path.exists(conf_dir),
            f'{conf_dir} still there: {os.listdir(conf_dir) if os.path.exists(conf_dir) else ""}')
    R.check('disable.process_gone', wait_for(lambda: not pid_alive(pid), 5),
            f'pid {pid} still alive after disable()')
    R.check('disable.namespace_removed', not netns_exists(net.ns),
            f'namespace {net.ns} still exists')
    R.check('disable.dhcp_port_released',
            any(c[0] == 'release_dhcp_port' for c in net.plugin.calls),
            'release_dhcp_port not called')
    time.sleep(1.0)
    R.check('disable.nothing_recreated_1s',
            not os.path.exists(conf_dir) and not pids_with_arg(net.id),
            f'1 s later: conf dir exists={os.path.exists(conf_dir)} '
            f'({os.listdir(conf_dir) if os.path.exists(conf_dir) else ""}), '
            f'processes with the network id: {pids_with_arg(net.id)}')
    R.check('disable.vm1_no_lease', vm1.udhcpc(tries=2) is None, 'a VM still gets a lease')
    net.destroy()


def option_case(s, name, overrides, expect_args, check, net_kw=None, ports=('172.16.1.103',),
                extra_opts=None, dns_names=None):
    """Enable with agent options set; check the command line, that the server stays up, and
    what a VM gets."""
    for k, v in overrides.items():
        N.cfg.CONF.set_override(k, v)
    try:
        net = Net(s, **(net_kw or {}))
        plist = []
        for spec in ports:  # 'ip' or ('ip', subnet_index)
            ip, sub = (spec, 0) if isinstance(spec, str) else spec
            plist.append(net.add_port(ip, subnet_index=sub,
                                      extra_dhcp_opts=(extra_opts or {}).get(ip),
                                      dns_name=(dns_names or {}).get(ip, '')))
        vms = [net.vm(p) for p in plist]
        mark = net.call('enable')
        args = cmdline_args(net, mark)
        if s.base_args:
            base = set(normalize_args(s.base_args, s.base_net))
            mine = normalize_args(args, net)
            R.info(f'{name}: command line vs the default one: '
                   f'+{[a for a in mine if a not in base]} '
                   f'-{[a for a in base if a not in mine]}')
        check_args(name, args, *expect_args)
        check_running(name, net)
        if check_alive_after(name, net):
            check(name, net, plist, vms, args)
        net.destroy()
    finally:
        for k in overrides:
            N.cfg.CONF.clear_override(k)


def case_local_resolv(s):
    def check(name, net, ports, vms, args):
        R.check(f'{name}.empty_arg_passed', '' in args and '--no-resolv' not in args,
                f'expected Neutron\'s empty-string argument and no --no-resolv: {args}')
        check_lease(f'{name}.vm1', vms[0].udhcpc(), ports[0], net)
    option_case(s, 'local_resolv', {'dnsmasq_local_resolv': True}, [], check)


def case_dns_servers(s):
    def check(name, net, ports, vms, args):
        R.check(f'{name}.no_resolv', '--no-resolv' in args, f'{args}')
        lease = vms[0].udhcpc(configure=True)
        # subnet without dns_nameservers: dnsmasq names itself (the DHCP port) as DNS server
        check_lease(f'{name}.vm1', lease, ports[0], net, dns=(lease or {}).get('dns'))
        # subnet without dns_nameservers: the DHCP port is the VM's DNS server, and answers
        R.eq(f'{name}.dns_server_is_dhcp_port', (lease or {}).get('dns'), [net.dhcp_ip])
        R.eq(f'{name}.dns.answers', vms[0].dig(net.dhcp_ip, host_name('172.16.1.103') +
                                              '.openstacklocal'), '172.16.1.103')
    option_case(s, 'dns_servers', {'dnsmasq_dns_servers': ['192.0.2.10', '192.0.2.11']},
                ['--server=192.0.2.10', '--server=192.0.2.11'], check,
                net_kw={'subnet_over': {'dns_nameservers': []}})


def case_dns_domain(s):
    def check(name, net, ports, vms, args):
        lease = vms[0].dhclient()
        check_lease(f'{name}.vm1', lease, ports[0], net, domain='qtexample.org',
                    hostname=host_name('172.16.1.103'))
        lease = vms[1].dhclient()
        check_lease(f'{name}.vm2_dns_name', lease, ports[1], net, domain='qtexample.org',
                    hostname='qtvm-two')
        with open(net.conf_file('host')) as f:
            hosts = f.read()
        R.check(f'{name}.hosts_file_fqdn', 'host-172-16-1-103.qtexample.org.' in hosts and
                'qtvm-two.qtexample.org.' in hosts, f'host file: {hosts!r}')
        ans = vms[1].dig(net.dhcp_ip, 'qtvm-two.qtexample.org') if vms[1].udhcpc(
            configure=True) else None
        R.eq(f'{name}.dns.dns_name', ans, '172.16.1.104')
    option_case(s, 'dns_domain', {'dns_domain': 'qtexample.org'}, ['--domain=qtexample.org'],
                check, ports=('172.16.1.103', '172.16.1.104'),
                dns_names={'172.16.1.104': 'qtvm-two'})


def case_isolated_metadata(s):
    def check(name, net, ports, vms, args):
        # Neutron orders: host_routes, then the metadata route, then the default route
        routes = [(r['destination'], r['nexthop']) for r in NET1['host_routes']] + \
            [('169.254.169.254/32', net.dhcp_ip), ('0.0.0.0/0', NET1['gateway_ip'])]
        check_lease(f'{name}.vm1.dhclient', vms[0].dhclient(), ports[0], net, routes=routes)
        check_lease(f'{name}.vm1.udhcpc', vms[0].udhcpc(), ports[0], net, routes=routes)
        addrs = sh('ip', '-n', net.ns, '-4', 'addr', 'show', check=False).stdout
        R.check(f'{name}.metadata_addr_on_port', '169.254.169.254/32' in addrs,
                'Neutron did not add 169.254.169.254 to the DHCP port')
    option_case(s, 'isolated_metadata', {'enable_isolated_metadata': True}, [], check)


def case_broadcast_reply(s):
    def check(name, net, ports, vms, args):
        rep = [r for r in vms[0].probe('discover', broadcast=False) if r['type'] == 'OFFER']
        R.check(f'{name}.offer_broadcast', len(rep) == 1 and rep[0]['dst'] == '255.255.255.255',
                f'DISCOVER without the broadcast flag: replies {rep}')
        check_lease(f'{name}.vm1', vms[0].dhclient(), ports[0], net)
    option_case(s, 'broadcast_reply', {'dhcp_broadcast_reply': True}, ['--dhcp-broadcast'],
                check)


def case_log_dir(s):
    logdir = os.path.join(s.tmp, 'dnsmasq-logs')

    def check(name, net, ports, vms, args):
        logf = os.path.join(logdir, net.id, 'dhcp_dns_log')
        check_args(name, args, f'--log-facility={logf}')
        check_lease(f'{name}.vm1', vms[0].dhclient(), ports[0], net)
        mac = ports[0]['mac_address']

        def has_ack():
            try:
                with open(logf) as f:
                    return any('DHCPACK' in ln and mac in ln for ln in f)
            except OSError:
                return False
        R.check(f'{name}.log_has_ack', wait_for(has_ack, 3),
                f'{logf}: no DHCPACK line for {mac} '
                f'(exists={os.path.exists(logf)})')
    option_case(s, 'log_dir', {'dnsmasq_base_log_dir': logdir},
                ['--log-queries', '--log-dhcp'], check)


def case_renewal_times(s):
    def check(name, net, ports, vms, args):
        lease = vms[0].dhclient()
        check_lease(f'{name}.vm1', lease, ports[0], net)
        if lease:
            R.eq(f'{name}.vm1.t1', lease['t1'], 600)
            R.eq(f'{name}.vm1.t2', lease['t2'], 900)
    option_case(s, 'renewal_times', {'dhcp_renewal_time': 600, 'dhcp_rebinding_time': 900},
                ['--dhcp-option-force=option:T1,600s', '--dhcp-option-force=option:T2,900s'],
                check)


def case_lease_max(s):
    def check(name, net, ports, vms, args):
        check_lease(f'{name}.vm1', vms[0].udhcpc(), ports[0], net)
        check_lease(f'{name}.vm2', vms[1].udhcpc(), ports[1], net)
        # a third port added later has no pre-seeded lease; the cap of 2 is reached
        p3 = net.add_port('172.16.1.105')
        vm3 = net.vm(p3)
        net.call('reload_allocations')
        rep = vm3.probe('discover')
        R.info(f'{name}: 3rd client DISCOVER -> {[(r["type"], r["yiaddr"]) for r in rep]}')
        lease = vm3.udhcpc(tries=3)
        R.check(f'{name}.vm3_refused', lease is None,
                f'a 3rd client got {lease and lease["ip"]} with --dhcp-lease-max=2')
        R.info(f'{name}: 3rd client udhcpc events {vm3.last_events}')
        check_lease(f'{name}.vm1_renews', vms[0].udhcpc(), ports[0], net)
    option_case(s, 'lease_max', {'dnsmasq_lease_max': 2}, ['--dhcp-lease-max=2'], check,
                ports=('172.16.1.103', '172.16.1.104'))


def case_extra_dhcp_opts(s):
    cid = 'qt-client-3'
    opts = {
        '172.16.1.103': [{'opt_name': 'mtu', 'opt_value': '1400', 'ip_version': 4},
                         {'opt_name': 'bootfile-name', 'opt_value': 'pxelinux.0',
                          'ip_version': 4},
                         # Ironic's form: a second tag, set by --dhcp-match=set:ipxe,175
                         {'opt_name': 'tag:ipxe,bootfile-name',
                          'opt_value': 'http://172.16.1.9/boot.ipxe', 'ip_version': 4},
                         {'opt_name': 'tftp-server', 'opt_value': '172.16.1.9',
                          'ip_version': 4},
                         {'opt_name': '42', 'opt_value': '172.16.1.9', 'ip_version': 4}],
        '172.16.1.105': [{'opt_name': 'client-id', 'opt_value': cid, 'ip_version': 4}],
    }

    def check(name, net, ports, vms, args):
        with open(net.conf_file('opts')) as f:
            optsfile = f.read()
        with open(net.conf_file('host')) as f:
            hostsfile = f.read()
        R.info(f'{name}: opts file: {optsfile!r}')
        R.info(f'{name}: host file: {hostsfile!r}')
        lease = vms[0].dhclient()
        check_lease(f'{name}.vm1', lease, ports[0], net, mtu=1400)
        if lease:
            R.eq(f'{name}.vm1.bootfile', lease['bootfile'], 'pxelinux.0')
            R.eq(f'{name}.vm1.tftp_server', lease['raw'].get('new_tftp_server_name'),
                 '172.16.1.9')
            R.eq(f'{name}.vm1.ntp_option42', lease['raw'].get('new_ntp_servers'), '172.16.1.9')
        # an iPXE client (sends option 175) gets the tag:ipxe bootfile
        lease = vms[0].udhcpc(extra=['-x', '0xaf:0101'])
        check_lease(f'{name}.vm1_ipxe', lease, ports[0], net, mtu=1400)
        if lease:
            R.eq(f'{name}.vm1_ipxe.bootfile', lease['bootfile'], 'http://172.16.1.9/boot.ipxe')
        check_lease(f'{name}.vm2_no_extra', vms[1].dhclient(), ports[1], net)
        # the client-id port: host line "mac,id:qt-client-3,name,ip"
        lease = vms[2].udhcpc(client_id_hex=cid.encode().hex())
        check_lease(f'{name}.vm3_client_id', lease, ports[2], net)
    option_case(s, 'extra_dhcp_opts', {}, [], check,
                ports=('172.16.1.103', '172.16.1.104', '172.16.1.105'), extra_opts=opts)


def case_two_subnets(s):
    def check(name, net, ports, vms, args):
        ranges = [a for a in args if a.startswith('--dhcp-range=')]
        R.check(f'{name}.two_ranges', len(ranges) == 2, f'{ranges}')
        R.eq(f'{name}.dhcp_port_ips', len(net.dhcp_ips), 2)
        r1 = [('172.16.2.0/24', '0.0.0.0')] + base_routes()
        r2 = [('172.16.1.0/24', '0.0.0.0'), ('0.0.0.0/0', NET2['gateway_ip'])]
        check_lease(f'{name}.vm1', vms[0].dhclient(), ports[0], net, subnet=0, routes=r1)
        check_lease(f'{name}.vm2', vms[1].dhclient(), ports[1], net, subnet=1, routes=r2)
        check_lease(f'{name}.vm2.udhcpc', vms[1].udhcpc(), ports[1], net, subnet=1, routes=r2)

    option_case(s, 'two_subnets', {}, [], check, net_kw={'subnets': (NET1, NET2)},
                ports=('172.16.1.103', ('172.16.2.104', 1)))


CASES = [
    ('enable', case_enable),
    ('reload', case_reload),
    ('restart', case_restart),
    ('disable', case_disable),
    ('local_resolv', case_local_resolv),
    ('dns_servers', case_dns_servers),
    ('dns_domain', case_dns_domain),
    ('isolated_metadata', case_isolated_metadata),
    ('broadcast_reply', case_broadcast_reply),
    ('log_dir', case_log_dir),
    ('renewal_times', case_renewal_times),
    ('lease_max', case_lease_max),
    ('extra_dhcp_opts', case_extra_dhcp_opts),
    ('two_subnets', case_two_subnets),
    ('dual_stack', lambda s: __import__('dual_stack').case_dual_stack(s)),
]


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


class Suite:
    def __init__(self, args, tmp, topo, wrappers):
        self.args, self.tmp, self.topo, self.wrappers = args, tmp, topo, wrappers
        self.case, self.case_index = None, 0
        self.base_args = self.base_net = None
        self.expected_respawns = set()  # networks whose server died of a known defect


def preflight():
    missing = [t for t in ('ip', 'dhclient', 'udhcpc', 'iptables-restore')
               if not shutil.which(t, path='/usr/sbin:/usr/bin:/sbin:/bin')]
    if not shutil.which('dhcp_release', path='/usr/bin:/usr/sbin'):
        missing.append('dhcp_release')
    if missing:
        raise SystemExit(f'missing tools: {missing}; apt-get install -y iproute2 '
                         'isc-dhcp-client udhcpc dnsmasq-utils iptables (dnsutils for dig)')
    if os.geteuid() != 0:
        raise SystemExit('run as root (network namespaces)')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--dnsmasq', help='the dnsmasq binary (or wrapper) under test')
    ap.add_argument('--only', help='comma-separated case names (see --list)')
    ap.add_argument('--list', action='store_true')
    ap.add_argument('--restarts', type=int, default=10)
    ap.add_argument('--keep', action='store_true', help='keep the temp dir (logs, conf dirs)')
    ap.add_argument('--server-log', action='store_true',
                    help='debug aid: set dnsmasq_base_log_dir for every case (adds --log-dhcp '
                    '--log-queries --log-facility to every command line); logs under the '
                    'temp dir, kept')
    ap.add_argument('--probe', help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        return probe_main(json.loads(args.probe))
    if args.list:
        print('\n'.join(n for n, _ in CASES))
        return 0
    if not args.dnsmasq:
        ap.error('--dnsmasq is required')
    dnsmasq = os.path.abspath(args.dnsmasq)
    if not os.access(dnsmasq, os.X_OK):
        ap.error(f'{dnsmasq} is not executable')
    selected = CASES
    if args.only:
        names = [n.strip() for n in args.only.split(',') if n.strip()]
        unknown = [n for n in names if n not in dict(CASES)]
        if unknown:
            ap.error(f'unknown case(s) {unknown}; cases: {[n for n, _ in CASES]}')
        selected = [(n, f) for n, f in CASES if n in names]
    preflight()

    t_start = time.time()
    tmp = tempfile.mkdtemp(prefix='qt-neutron-')
    os.chmod(tmp, 0o755)  # dnsmasq drops to "nobody" and must read Neutron's files
    topo = Topology(tmp)
    wrappers = Wrappers(tmp, dnsmasq)
    venv_bin = os.path.dirname(sys.executable)
    os.environ['PATH'] = ':'.join([wrappers.bin, venv_bin, '/usr/local/sbin', '/usr/local/bin',
                                   '/usr/sbin', '/usr/bin', '/sbin', '/bin'])
    cleaned = []

    def cleanup():
        if cleaned:
            return
        cleaned.append(1)
        try:
            topo.teardown()
        finally:
            if N is not None:
                try:
                    N.monitor.stop()
                except Exception:  # noqa: BLE001
                    pass
            if not args.keep and not R.failed:
                shutil.rmtree(tmp, ignore_errors=True)
    atexit.register(cleanup)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(130))  # -> FAIL run.completed, cleanup

    saved_stderr = None
    try:
        R.info(f'dnsmasq under test: {dnsmasq}; temp dir {tmp}; run tag {topo.tag}')
        v = sh(dnsmasq, '--version', check=False, timeout=10)
        R.version_text = (v.stdout or v.stderr or '').strip()
        R.info(f'{dnsmasq} --version: {R.version_text.splitlines()[:1]}')
        topo.up()
        # the privsep daemons Neutron starts write start-up lines to stdout/stderr: point fds
        # 1 and 2 at a file and keep printing our lines on a copy of the real stdout
        saved_stderr = os.dup(2)
        sys.stdout.flush()
        real_stdout = os.dup(1)
        errlog = os.open(os.path.join(tmp, 'stderr.log'), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(errlog, 2)
        os.dup2(errlog, 1)
        sys.stdout = os.fdopen(real_stdout, 'w', buffering=1)
        load_neutron(tmp, topo)
        if args.server_log:
            args.keep = True
            N.cfg.CONF.set_override('dnsmasq_base_log_dir', os.path.join(tmp, 'server-logs'))
        from importlib.metadata import version
        R.info(f'neutron {version("neutron")}, driver {N.dhcp.Dnsmasq.__module__}.Dnsmasq')
        suite = Suite(args, tmp, topo, wrappers)
        for i, (name, fn) in enumerate(selected, 1):
            suite.case, suite.case_index = name, i
            t0 = time.time()
            try:
                fn(suite)
            except Exception as e:  # noqa: BLE001
                R.check(f'{name}.completed', False,
                        f'{type(e).__name__}: {e} at '
                        f'{traceback.extract_tb(e.__traceback__)[-1].line!r}')
                with open(os.path.join(tmp, 'tracebacks.log'), 'a') as f:
                    traceback.print_exc(file=f)
                # leave nothing of this case behind
                delete_netns(topo.dhcp_ns(i))
                for nm in [n for n in topo.owned_ns if n.startswith('qtnv')]:
                    delete_netns(nm)
                    topo.owned_ns.remove(nm)
            R.info(f'case {name} took {time.time() - t0:.1f} s')
        respawns = [r for r in CAPTURE.records if ('respawn' in r[2].lower() or
                    'should not have died' in r[2]) and
                    not any(n in r[2] for n in suite.expected_respawns)]
        R.check('process_monitor.no_respawn', not respawns, f'{respawns[:3]}')
    except (KeyboardInterrupt, SystemExit) as e:
        signal.alarm(0)
        R.check('run.completed', False, f'interrupted ({type(e).__name__})')
    finally:
        if saved_stderr is not None:
            os.dup2(saved_stderr, 2)
        if args.keep or R.failed:
            R.info(f'kept {tmp} (neutron.log, dnsmasq-argv.log, dhcp_release.log, VM logs)')
        cleanup()
        R.info(f'total {time.time() - t_start:.1f} s')
        if R.xfailed:
            R.info(f'{R.xfailed} expected failure(s) (XFAIL) of known defects of the binary '
                   'under test, counted in neither total')
        print(f'{R.passed} passed, {R.failed} failed', flush=True)
    return 1 if R.failed else 0


if __name__ == '__main__':
    sys.exit(main())
