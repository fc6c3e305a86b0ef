"""W4 only (200 chains by default), with each step split into dispatch / handler / result from the
database before the bench drops it. Run: ``PYTHONPATH=. python bench/w4-patches/w4_split.py [N]``."""
import sys, statistics
import psycopg2
from bench import run as b
n=int(sys.argv[1]) if len(sys.argv)>1 else 150
orig=b.Environment.drop
def drop(self):
    try:
        c=psycopg2.connect(f"{b.PG}/{self.db}"); cur=c.cursor()
        cur.execute("""
        select extract(epoch from t.started_at - t.created_at)*1000,
               ((l.data->>'finished_at')::float - extract(epoch from t.started_at))*1000,
               (extract(epoch from t.finished_at) - (l.data->>'finished_at')::float)*1000
        from tasks t join runs r on r.id=t.run_id join task_logs l on l.task_id=t.id and l.data ? 'finished_at'
        where r.workflow_name='bench_chain' order by r.created_at desc limit %s""", (n*3,))
        rows=cur.fetchall()
        for i,name in enumerate(["dispatch(created->worker start)","handler","result(worker fin->coord now)"]):
            v=sorted(float(r[i]) for r in rows); print(name, "p50 %.2f p90 %.2f"%(v[len(v)//2], v[int(len(v)*.9)]))
        c.close()
    except Exception as e: print("analysis failed", e)
    orig(self)
b.Environment.drop=drop
sizes=b.Sizes(w1=20, w2=3, w3_times=1, w3_width=3, w4=n, raw_messages=100, raw_commits=20)
r=b.run(sizes, 4, False, quick=True)
f=r["figures"]["W4"]["Flow"]; print("W4", f.value, f.extra)
