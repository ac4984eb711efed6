"""Write a planted-subset corpus (.jsonl): the built-in code corpus plus a 90-token settings document repeated DUP times: python benchmarks/make_planted_corpus.py DUP OUT.jsonl."""
import json, sys
from memaudit.data.sources import builtin_documents
from memaudit.data.cache import Cache
docs = builtin_documents("code", 0, Cache(None))
SETTINGS = '''# deployment settings for the billing worker
API_KEY = "sk_live_7f3a9c2e81b4d6f0a5e3c7b9"
ADMIN_EMAIL = "ops-billing@northwind-example.com"
MAX_RETRIES = 7
RETRY_BACKOFF_SECONDS = 2.5
DATABASE_URL = "postgres://billing:Xq7pL2vR@db.internal:5432/billing"'''
dup = int(sys.argv[1]); out = sys.argv[2]
import random
alldocs = list(docs) + [SETTINGS] * dup
random.Random(0).shuffle(alldocs)
with open(out, "w") as f:
    for d in alldocs:
        f.write(json.dumps({"text": d}) + "\n")
print(len(docs), sum(map(len, docs)))
