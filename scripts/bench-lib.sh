# Shell helpers the benchmark scripts share; sourced, not run.

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits up to 10 s for URL $1 to answer at all; exits the script otherwise.
wait_http() { for _ in $(seq 1 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done; echo "no answer from $1" >&2; exit 1; }

# CPU seconds (user + system) used so far by process $1.
cpu() { python3 -c "import os,sys; f=open('/proc/$1/stat').read().rsplit(')',1)[1].split(); print((int(f[11])+int(f[12]))/os.sysconf('SC_CLK_TCK'))"; }

# wrk --latency output on stdin -> "rps p50_ms p99_ms requests seconds";
# warns on stderr about non-2xx/3xx answers.
parse() {
  python3 -c '
import re,sys
t=sys.stdin.read()
rps=float(re.search(r"Requests/sec:\s+([\d.]+)",t).group(1))
m=re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)\b",t)
n=int(m.group(1)); secs=float(m.group(2))*{"ms":0.001,"s":1,"m":60}[m.group(3)]
def ms(p):
    m=re.search(r"\s"+p+r"%\s+([\d.]+)(us|ms|s)\b",t)
    v=float(m.group(1)); u=m.group(2)
    return v/1000 if u=="us" else v*1000 if u=="s" else v
bad=re.search(r"Non-2xx or 3xx responses:\s+(\d+)",t)
if bad: sys.stderr.write("WARNING: %s non-2xx responses\n"%bad.group(1))
print("%.0f %.3f %.3f %d %.2f"%(rps,ms("50"),ms("99"),n,secs))'
}
