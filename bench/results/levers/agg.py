import json, glob, statistics as st, collections
rows = collections.defaultdict(lambda: collections.defaultdict(list))
for f in sorted(glob.glob('/tmp/levers/*-[0-9]/latest.json')):
    cfg = f.split('/')[-2].rsplit('-', 1)[0]
    d = json.load(open(f))
    cells = {(c['target'], c['connections']): c for c in d['cells']}
    for (t, c), cell in cells.items():
        if t != 'gateway_full':
            continue
        td = cells[('triton_direct', c)]
        cpu = (cell.get('cpu_us_per_request') or {}).get('gateway') if isinstance(cell.get('cpu_us_per_request'), dict) else cell.get('cpu_us_per_request')
        rows[cfg][c].append((cell['rps'] / td['rps'], cell['rps'], cell['p50_ms'] - td['p50_ms'], cell['p99_ms'], cpu, td['rps']))
for cfg in ('base', 'l1', 'l2', 'main'):
    for c in sorted(rows[cfg]):
        v = rows[cfg][c]
        med = lambda i: st.median(x[i] for x in v if x[i] is not None) if any(x[i] is not None for x in v) else None
        print(f"{cfg:5} c={c:<4} n={len(v)} ratio {med(0):.3f} rps {med(1):8.0f} added_p50 {med(2):.3f} p99 {med(3):.2f} cpu {med(4)} direct {med(5):.0f}")
