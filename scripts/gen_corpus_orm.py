#!/usr/bin/env python3
"""Generate tests/corpus/orm_migrations.yaml: SQL that Django and SQLAlchemy/Alembic
generate for PostgreSQL.

End to end, run with the project venv:  .venv/bin/python scripts/gen_corpus_orm.py

* makes (or reuses) a throwaway venv /tmp/corpus_venv with pinned Django, Alembic,
  SQLAlchemy and drivers (never the project venv);
* starts a throwaway PostgreSQL (pgserver) with log_statement=all;
* Django: builds a tiny project (app ``shop``: FK, unique, index, CharField, JSONField,
  ManyToMany; migration 0001 from ``makemigrations``, 0002/0003 hand-written with
  rename/add/remove/alter field, constraints, GIN index, rename/create model), then
    - ``sqlmigrate`` for contenttypes, auth and shop migrations (forwards, and
      backwards for shop), ``sqlsequencereset`` and ``sqlflush`` — statements split
      from the command output, BEGIN;/COMMIT; wrapper lines dropped;
    - ``migrate`` and a script of typical ORM calls run live, statements read from
      the server log (application_name ``django``);
* Alembic: a project with three revisions (create_table, add_column, create_index,
  alter_column, drop_column, create_foreign_key, ...), ``alembic upgrade head --sql``
  and ``alembic downgrade head:base --sql`` (offline; statements split exactly on the
  blank line Alembic writes after each one), then ``alembic upgrade head`` live
  (statements from the server log, application_name ``alembic``);
* SQLAlchemy: Core/ORM statements compiled for the postgresql dialect with
  ``literal_binds``, plus a live session workflow, reflection and create/drop_all through
  psycopg 3, psycopg2 and asyncpg (server log, application_name ``sqlalchemy``).

Each statement is the exact text produced/sent, except Django's server-side cursor and
savepoint names, whose thread-id part is replaced by 1 so the file is deterministic.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gen_corpus_psql import (
    dedupe_by_shape,
    embedded_pg,
    ensure_tmp_venv,
    server_version,
    venv_versions,
    write_corpus,
)

# --------------------------------------------------------------------------------------
# Django project
# --------------------------------------------------------------------------------------

DJ_SETTINGS = """
import os
SECRET_KEY = "corpus-not-secret"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.postgres",
    "shop",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "djangodb",
        "USER": "postgres",
        "HOST": os.environ["PG_HOST"],
        "OPTIONS": {"application_name": os.environ.get("PG_APPNAME", "django")},
    }
}
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
"""

DJ_MODELS_V1 = """
from django.conf import settings
from django.db import models


class Category(models.Model):
    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=120)


class Tag(models.Model):
    label = models.CharField(max_length=50)


class Product(models.Model):
    category = models.ForeignKey(Category, on_delete=models.PROTECT, related_name="products")
    name = models.CharField(max_length=200, db_index=True)
    sku = models.CharField(max_length=32, unique=True)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    attributes = models.JSONField(default=dict, blank=True)
    tags = models.ManyToManyField(Tag, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    is_active = models.BooleanField(default=True)

    class Meta:
        indexes = [models.Index(fields=["category", "-created_at"], name="product_cat_created_idx")]


class Order(models.Model):
    customer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    product = models.ForeignKey(Product, on_delete=models.SET_NULL, null=True)
    quantity = models.PositiveIntegerField(default=1)
    note = models.TextField(blank=True)
    placed = models.DateTimeField()
"""

DJ_MIGRATION_0002 = """
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("shop", "0001_initial")]

    operations = [
        migrations.RenameField("order", "note", "comment"),
        migrations.AddField(
            "product", "discontinued_at", models.DateTimeField(null=True, blank=True)
        ),
        migrations.RemoveField("product", "is_active"),
        migrations.AlterField("tag", "label", models.CharField(max_length=80, unique=True)),
        migrations.AddConstraint(
            "product",
            models.CheckConstraint(condition=models.Q(price__gte=0), name="price_non_negative"),
        ),
        migrations.AddConstraint(
            "order",
            models.UniqueConstraint(
                fields=["customer", "product"],
                condition=models.Q(quantity__gt=0),
                name="one_open_order_per_product",
            ),
        ),
    ]
"""

DJ_MIGRATION_0003 = """
import django.contrib.postgres.indexes
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("shop", "0002_rename_and_constraints"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddIndex(
            "product",
            django.contrib.postgres.indexes.GinIndex(fields=["attributes"], name="product_attrs_gin"),
        ),
        migrations.AlterField("order", "quantity", models.IntegerField(default=1)),
        migrations.AlterField("order", "comment", models.TextField(blank=True, null=True)),
        migrations.RenameModel("Tag", "Label"),
        migrations.CreateModel(
            name="Review",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False,
                                           verbose_name="ID")),
                ("stars", models.SmallIntegerField()),
                ("body", models.TextField()),
                ("author", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE,
                                             to=settings.AUTH_USER_MODEL)),
                ("product", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE,
                                              related_name="reviews", to="shop.product")),
            ],
        ),
        migrations.AlterUniqueTogether("review", {("author", "product")}),
        migrations.AlterModelOptions("review", {"ordering": ["-stars"]}),
        migrations.AddField(
            "review", "uuid", models.UUIDField(null=True, unique=True)
        ),
    ]
"""

DJ_MODELS_FINAL = """
from django.conf import settings
from django.contrib.postgres.indexes import GinIndex
from django.db import models


class Category(models.Model):
    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=120)


class Label(models.Model):
    label = models.CharField(max_length=80, unique=True)


class Product(models.Model):
    category = models.ForeignKey(Category, on_delete=models.PROTECT, related_name="products")
    name = models.CharField(max_length=200, db_index=True)
    sku = models.CharField(max_length=32, unique=True)
    price = models.DecimalField(max_digits=10, decimal_places=2)
    attributes = models.JSONField(default=dict, blank=True)
    tags = models.ManyToManyField(Label, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    discontinued_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["category", "-created_at"], name="product_cat_created_idx"),
            GinIndex(fields=["attributes"], name="product_attrs_gin"),
        ]
        constraints = [models.CheckConstraint(condition=models.Q(price__gte=0), name="price_non_negative")]


class Order(models.Model):
    customer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    product = models.ForeignKey(Product, on_delete=models.SET_NULL, null=True)
    quantity = models.IntegerField(default=1)
    comment = models.TextField(blank=True, null=True)
    placed = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "product"],
                condition=models.Q(quantity__gt=0),
                name="one_open_order_per_product",
            )
        ]


class Review(models.Model):
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="reviews")
    stars = models.SmallIntegerField()
    body = models.TextField()
    uuid = models.UUIDField(null=True, unique=True)

    class Meta:
        ordering = ["-stars"]
        unique_together = {("author", "product")}
"""

# Runs inside the tmp venv, cwd = Django project dir. Mode "sql": sqlmigrate & co,
# statements written as JSON to argv[2]. Mode "migrate" / "runtime": live traffic.
DJ_DRIVER = r'''
import datetime
import io
import json
import os
import sys
import uuid

import django

FIXED = datetime.datetime(2024, 5, 17, 12, 30, 0, tzinfo=datetime.timezone.utc)
django.setup()
from django.utils import timezone  # noqa: E402

timezone.now = lambda: FIXED  # deterministic auto_now_add / literals
import django.db.migrations.recorder as recorder  # noqa: E402

recorder.now = lambda: FIXED
from django.core.management import call_command  # noqa: E402

mode = sys.argv[1]


def split_script(text):
    """sqlmigrate/sqlflush/sqlsequencereset print one statement per line (a statement
    spanning lines ends at the first line ending with ';'), comments as '--' lines."""
    out, buf = [], []
    for line in text.splitlines():
        if not buf and (not line.strip() or line.startswith("--")):
            continue
        buf.append(line)
        if line.rstrip().endswith(";"):
            stmt = "\n".join(buf)
            buf = []
            if stmt.strip().upper() in ("BEGIN;", "COMMIT;"):
                continue  # transaction wrapper lines
            out.append(stmt)
    if buf:
        out.append("\n".join(buf))
    return out


def cmd(*args):
    buf = io.StringIO()
    call_command(*args, stdout=buf, no_color=True)
    return buf.getvalue()


if mode == "sql":
    from django.db.migrations.loader import MigrationLoader
    from django.db import connection

    loader = MigrationLoader(connection)
    stmts = []
    for app in ("contenttypes", "auth", "shop"):
        names = sorted(n for (a, n) in loader.disk_migrations if a == app)
        for name in names:
            stmts += split_script(cmd("sqlmigrate", app, name))
    json.dump(stmts, open(sys.argv[2], "w"))

elif mode == "post_sql":  # needs the tables to exist (backwards introspects constraint names)
    from django.db.migrations.loader import MigrationLoader
    from django.db import connection

    loader = MigrationLoader(connection)
    stmts = []
    for name in sorted((n for (a, n) in loader.disk_migrations if a == "shop"), reverse=True):
        stmts += split_script(cmd("sqlmigrate", "--backwards", "shop", name))
    stmts += split_script(cmd("sqlsequencereset", "shop", "auth", "contenttypes"))
    stmts += split_script(cmd("sqlflush"))
    json.dump(stmts, open(sys.argv[2], "w"))

elif mode == "migrate":
    call_command("migrate", verbosity=0)
    call_command("showmigrations", stdout=io.StringIO())

elif mode == "runtime":
    from django.contrib.auth.models import Group, Permission, User
    from django.contrib.postgres.aggregates import ArrayAgg, StringAgg
    from django.contrib.postgres.search import SearchQuery, SearchRank, SearchVector
    from django.core.paginator import Paginator
    from django.db import connection, transaction
    from django.db.models import (Avg, Count, Exists, F, Max, OuterRef, Q, Subquery, Sum,
                                  Value, Window)
    from django.db.models.functions import Coalesce, Lower, RowNumber, TruncMonth
    from shop.models import Category, Label, Order, Product, Review

    u = User.objects.create(username="alice", email="alice@example.com", password="!fixed",
                            date_joined=FIXED)
    bob = User.objects.create(username="bob", email="bob@example.com", password="!fixed",
                              date_joined=FIXED, is_staff=True)
    g = Group.objects.create(name="buyers")
    u.groups.add(g)
    g.permissions.add(*Permission.objects.filter(codename__startswith="view_"))
    u.has_perm("shop.view_product")
    User.objects.filter(username__iexact="ALICE").exists()
    books = Category.objects.create(name="Books", slug="books")
    Category.objects.get_or_create(name="Music", defaults={"slug": "music"})
    Category.objects.update_or_create(name="Music", defaults={"slug": "music-cds"})
    labels = Label.objects.bulk_create([Label(label="new"), Label(label="sale"), Label(label="gift")])
    p = Product.objects.create(category=books, name="Dune", sku="B-1", price="9.99",
                               attributes={"pages": 412, "lang": "en", "tags": ["scifi"]})
    p2 = Product.objects.create(category=books, name="Emma", sku="B-2", price="4.50")
    p.tags.add(*labels)
    p.tags.remove(labels[0])
    p2.tags.set([labels[1]])
    list(Product.objects.filter(name__icontains="dun").select_related("category")
         .order_by("-created_at")[:10])
    list(Product.objects.filter(attributes__pages__gt=100))
    list(Product.objects.filter(attributes__has_key="lang"))
    list(Product.objects.filter(attributes__contains={"lang": "en"}))
    list(Product.objects.filter(attributes__tags__0="scifi"))
    list(Product.objects.prefetch_related("tags", "reviews").all())
    Product.objects.filter(category__name__iexact="books").count()
    Product.objects.filter(Q(price__lt=5) | Q(sku__startswith="B"), ~Q(name="x")).exists()
    list(Category.objects.annotate(n=Count("products")).filter(n__gt=0).values("name", "n"))
    Product.objects.aggregate(total=Sum("price"), avg=Avg("price"), mx=Max("price"))
    Product.objects.filter(pk=p.pk).update(price=F("price") * 2)
    list(Product.objects.values_list("sku", flat=True).distinct())
    list(Product.objects.filter(created_at__year=2024, created_at__month__in=[4, 5]))
    list(Product.objects.filter(name__in=["Dune", "Emma"]).only("name").order_by(
        Lower("name").desc(nulls_last=True)))
    list(Product.objects.filter(discontinued_at__isnull=True, price__range=(1, 100)))
    Order.objects.create(customer=u, product=p, quantity=2, placed=FIXED, comment="gift wrap")
    Order.objects.create(customer=bob, product=p2, quantity=0, placed=FIXED)
    list(Order.objects.annotate(month=TruncMonth("placed")).values("month").annotate(c=Count("id")))
    newest = Order.objects.filter(product=OuterRef("pk")).order_by("-placed")
    list(Product.objects.annotate(
        last_order=Subquery(newest.values("placed")[:1]),
        has_orders=Exists(Order.objects.filter(product=OuterRef("pk"))),
        qty=Coalesce(Sum("order__quantity"), Value(0)),
    ))
    list(Product.objects.annotate(
        rn=Window(expression=RowNumber(), partition_by=[F("category")], order_by=F("price").desc())
    ))
    list(Product.objects.annotate(tag_names=ArrayAgg("tags__label"),
                                  tag_csv=StringAgg("tags__label", delimiter=", ")))
    vector = SearchVector("name", weight="A") + SearchVector("sku", weight="B")
    query = SearchQuery("dune")
    list(Product.objects.annotate(rank=SearchRank(vector, query)).filter(rank__gte=0.1))
    list(Product.objects.filter(name__search="dune"))
    with transaction.atomic():
        Product.objects.select_for_update(skip_locked=True).filter(pk=p.pk).first()
        list(Product.objects.select_for_update(nowait=True, of=("self",))
             .select_related("category").filter(pk=p.pk))
        with transaction.atomic():  # savepoint
            Review.objects.create(author=u, product=p, stars=5, body="great",
                                  uuid=uuid.UUID(int=1))
    try:
        with transaction.atomic():
            Review.objects.create(author=u, product=p, stars=1, body="dup")
    except Exception:
        pass
    Product.objects.in_bulk([p.pk, p2.pk])
    p.price = "12.00"
    p2.price = "3.00"
    Product.objects.bulk_update([p, p2], ["price"])
    for _ in Product.objects.filter(price__gt=0).iterator(chunk_size=10):
        pass
    list(Product.objects.filter(price__gt=1).union(Product.objects.filter(sku="B-2")))
    list(Review.objects.raw("SELECT * FROM shop_review WHERE stars >= %s", [3]))
    page = Paginator(Product.objects.order_by("id"), 1).page(2)
    list(page.object_list)
    with connection.cursor() as c:
        c.execute("SELECT count(*) FROM shop_product WHERE price > %s AND name ILIKE %s", [1, "%un%"])
    Product.objects.filter(pk=p2.pk).delete()
    User.objects.filter(username="bob").delete()
    Category.objects.filter(slug="music-cds").delete()
'''

# --------------------------------------------------------------------------------------
# Alembic project
# --------------------------------------------------------------------------------------

ALEMBIC_INI = """
[alembic]
script_location = %(here)s/migrations
sqlalchemy.url = {url}

[loggers]
keys = root

[handlers]
keys = console

[formatters]
keys = generic

[logger_root]
level = WARNING
handlers = console

[handler_console]
class = StreamHandler
args = (sys.stderr,)
level = NOTSET
formatter = generic

[formatter_generic]
format = %(levelname)-5.5s [%(name)s] %(message)s
"""

ALEMBIC_REV1 = '''
"""create users and posts

Revision ID: 1a2b3c4d5e6f
Revises:
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "1a2b3c4d5e6f"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("email", sa.String(255), nullable=False),
        sa.Column("full_name", sa.String(200)),
        sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False),
        sa.UniqueConstraint("email", name="uq_users_email"),
    )
    op.create_table(
        "posts",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), primary_key=True),
        sa.Column("author_id", sa.Integer(), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("body", sa.Text()),
        sa.Column("tags", postgresql.ARRAY(sa.Text()), server_default="{}"),
        sa.Column("meta", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("status", sa.Enum("draft", "published", "archived", name="post_status"),
                  server_default="draft", nullable=False),
        sa.Column("uid", sa.Uuid(), server_default=sa.text("gen_random_uuid()")),
        comment="blog posts",
    )
    op.create_index("ix_posts_author_id", "posts", ["author_id"])
    op.create_index("ix_posts_meta", "posts", ["meta"], postgresql_using="gin")
    op.create_index("ux_posts_title_published", "posts", ["title"], unique=True,
                    postgresql_where=sa.text("status = 'published'"))


def downgrade():
    op.drop_index("ux_posts_title_published", table_name="posts")
    op.drop_index("ix_posts_meta", table_name="posts")
    op.drop_index("ix_posts_author_id", table_name="posts")
    op.drop_table("posts")
    op.drop_table("users")
    sa.Enum(name="post_status").drop(op.get_bind(), checkfirst=False)
'''

ALEMBIC_REV2 = '''
"""profile columns, constraints

Revision ID: 2b3c4d5e6f70
Revises: 1a2b3c4d5e6f
"""
import sqlalchemy as sa
from alembic import op

revision = "2b3c4d5e6f70"
down_revision = "1a2b3c4d5e6f"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("users", sa.Column("display_name", sa.String(100), nullable=True))
    op.add_column("users", sa.Column("team_id", sa.Integer(), nullable=True))
    op.alter_column("users", "email", existing_type=sa.String(255), type_=sa.String(320),
                    existing_nullable=False)
    op.alter_column("users", "full_name", new_column_name="legal_name", existing_type=sa.String(200))
    op.execute("UPDATE users SET display_name = email WHERE display_name IS NULL")
    op.alter_column("users", "display_name", nullable=False, existing_type=sa.String(100))
    op.drop_column("users", "is_active")
    op.create_table(
        "teams",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(80), nullable=False),
    )
    op.create_foreign_key("fk_users_team_id_teams", "users", "teams", ["team_id"], ["id"],
                          ondelete="SET NULL")
    op.create_check_constraint("ck_teams_name_not_blank", "teams", "length(trim(name)) > 0")
    op.create_unique_constraint("uq_teams_name", "teams", ["name"])
    teams = sa.table("teams", sa.column("id", sa.Integer), sa.column("name", sa.String))
    op.bulk_insert(teams, [{"id": 1, "name": "core"}, {"id": 2, "name": "growth"}])


def downgrade():
    op.drop_constraint("uq_teams_name", "teams", type_="unique")
    op.drop_constraint("ck_teams_name_not_blank", "teams", type_="check")
    op.drop_constraint("fk_users_team_id_teams", "users", type_="foreignkey")
    op.drop_table("teams")
    op.add_column("users", sa.Column("is_active", sa.Boolean(), server_default=sa.true(), nullable=False))
    op.alter_column("users", "legal_name", new_column_name="full_name", existing_type=sa.String(200))
    op.alter_column("users", "email", existing_type=sa.String(320), type_=sa.String(255))
    op.drop_column("users", "team_id")
    op.drop_column("users", "display_name")
'''

ALEMBIC_REV3 = '''
"""comments, type changes, concurrent index

Revision ID: 3c4d5e6f7081
Revises: 2b3c4d5e6f70
"""
import sqlalchemy as sa
from alembic import op

revision = "3c4d5e6f7081"
down_revision = "2b3c4d5e6f70"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "comments",
        sa.Column("id", sa.BigInteger(), primary_key=True, autoincrement=True),
        sa.Column("post_id", sa.BigInteger(), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=True),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("score", sa.Numeric(5, 2), server_default="0"),
        sa.Column("posted_at", sa.DateTime(), server_default=sa.text("CURRENT_TIMESTAMP")),
    )
    op.create_foreign_key("fk_comments_post", "comments", "posts", ["post_id"], ["id"], ondelete="CASCADE")
    op.create_foreign_key("fk_comments_author", "comments", "users", ["author_id"], ["id"])
    op.alter_column("comments", "score", type_=sa.Integer(), existing_type=sa.Numeric(5, 2),
                    postgresql_using="round(score)::integer")
    op.alter_column("posts", "body", server_default="", existing_type=sa.Text())
    op.create_table_comment("comments", "reader comments")
    op.execute(sa.schema.CreateSequence(sa.Sequence("invoice_seq", start=1000, increment=10)))
    with op.get_context().autocommit_block():
        op.create_index("ix_comments_posted_at", "comments", ["posted_at"], postgresql_concurrently=True)
    op.rename_table("comments", "post_comments")
    op.drop_index("ix_posts_meta", table_name="posts")


def downgrade():
    op.create_index("ix_posts_meta", "posts", ["meta"], postgresql_using="gin")
    op.rename_table("post_comments", "comments")
    with op.get_context().autocommit_block():
        op.drop_index("ix_comments_posted_at", table_name="comments", postgresql_concurrently=True,
                      if_exists=True)
    op.execute(sa.schema.DropSequence(sa.Sequence("invoice_seq")))
    op.drop_table_comment("comments", existing_comment="reader comments")
    op.alter_column("posts", "body", server_default=None, existing_type=sa.Text())
    op.drop_table("comments")
'''

ALEMBIC_DRIVER = r"""
import json
import subprocess
import sys

mode, out = sys.argv[1], sys.argv[2]
alembic = [sys.executable, "-m", "alembic", "-c", "alembic.ini"]


def offline(*args):
    text = subprocess.run(alembic + list(args), text=True, capture_output=True, check=True).stdout
    stmts = []
    # Alembic writes each statement + ';' followed by one blank line, and collapses
    # blank lines inside statements, so '\n\n' splits exactly.
    for chunk in text.split("\n\n"):
        chunk = chunk.strip("\n")
        lines = [ln for ln in chunk.split("\n") if not ln.startswith("-- ")]
        chunk = "\n".join(lines).strip("\n")
        if not chunk or chunk.upper() in ("BEGIN;", "COMMIT;"):
            continue
        stmts.append(chunk)
    return stmts


if mode == "offline":
    stmts = offline("upgrade", "head", "--sql") + offline("downgrade", "head:base", "--sql")
    json.dump(stmts, open(out, "w"))
elif mode == "online":
    subprocess.run(alembic + ["upgrade", "head"], check=True)
    subprocess.run(alembic + ["downgrade", "-1"], check=True)
    subprocess.run(alembic + ["current"], check=True, capture_output=True)
"""

# --------------------------------------------------------------------------------------
# SQLAlchemy
# --------------------------------------------------------------------------------------

SA_DRIVER = r"""
import asyncio
import datetime
import json
import os
import sys

import sqlalchemy as sa
from sqlalchemy import (Boolean, DateTime, ForeignKey, Integer, MetaData, Numeric, String, Table,
                        Column, Text, and_, delete, exists, func, insert, literal_column, or_,
                        select, text, union_all, update)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import JSONB, ARRAY, insert as pg_insert
from sqlalchemy.orm import (DeclarativeBase, Mapped, Session, aliased, joinedload, mapped_column,
                            relationship, selectinload)

mode = sys.argv[1]
host = os.environ["PG_HOST"]
FIXED = datetime.datetime(2024, 5, 17, 12, 30, 0)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "sa_users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(100))
    active: Mapped[bool] = mapped_column(Boolean, server_default=sa.true())
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True),
                                                          server_default=func.now())
    orders: Mapped[list["Order"]] = relationship(back_populates="user", cascade="all, delete-orphan")


class Order(Base):
    __tablename__ = "sa_orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("sa_users.id", ondelete="CASCADE"), index=True)
    total: Mapped[float] = mapped_column(Numeric(12, 2))
    status: Mapped[str] = mapped_column(String(20), default="new")
    data: Mapped[dict] = mapped_column(JSONB, default=dict)
    tags: Mapped[list[str]] = mapped_column(ARRAY(Text), default=list)
    user: Mapped[User] = relationship(back_populates="orders")
    items: Mapped[list["Item"]] = relationship(cascade="all, delete-orphan")


class Item(Base):
    __tablename__ = "sa_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("sa_orders.id"))
    sku: Mapped[str] = mapped_column(String(40))
    qty: Mapped[int] = mapped_column(default=1)


users, orders, items = User.__table__, Order.__table__, Item.__table__


def core_statements():
    u, o = users.alias("u"), orders.alias("o")
    sub = select(orders.c.user_id, func.sum(orders.c.total).label("spent")).group_by(
        orders.c.user_id).subquery("spend")
    cte = select(orders.c.id, orders.c.user_id).where(orders.c.status == "new").cte("open_orders")
    rn = func.row_number().over(partition_by=orders.c.user_id, order_by=orders.c.total.desc())
    yield select(users).where(users.c.email.ilike("%@example.com")).order_by(users.c.id).limit(20).offset(40)
    yield (select(u.c.id, u.c.email, o.c.total).join(o, o.c.user_id == u.c.id)
           .where(and_(o.c.total > 100, or_(o.c.status == "paid", o.c.status.in_(["shipped", "new"]))))
           .order_by(o.c.total.desc().nulls_last()).limit(10))
    yield (select(users.c.email, sub.c.spent).outerjoin(sub, sub.c.user_id == users.c.id)
           .where(sub.c.spent.is_not(None)))
    yield (select(users.c.id, func.count(orders.c.id).label("n")).select_from(users.outerjoin(orders))
           .group_by(users.c.id).having(func.count(orders.c.id) > 2))
    yield select(cte.c.user_id, func.count()).group_by(cte.c.user_id)
    yield select(orders.c.id, rn.label("rn")).where(orders.c.tags.any("gift"))
    yield select(users.c.id).where(exists().where(orders.c.user_id == users.c.id))
    yield select(users).distinct(users.c.email).order_by(users.c.email, users.c.id.desc())
    yield select(orders).where(orders.c.data["kind"].astext == "gift").where(
        orders.c.data.contains(sa.cast(sa.literal('{"rush": true}'), JSONB)))
    yield select(orders).where(orders.c.id == 7).with_for_update()
    yield select(orders).where(orders.c.status == "new").with_for_update(skip_locked=True, of=orders)
    yield select(orders).where(orders.c.id == 7).with_for_update(nowait=True, read=True)
    yield select(orders).with_for_update(key_share=True)
    yield union_all(select(users.c.email).where(users.c.active),
                    select(users.c.email).where(users.c.name.is_(None)))
    yield select(func.date_trunc("month", users.c.created_at).label("m"), func.count()).group_by(
        literal_column("1"))
    yield select(sa.case((orders.c.total > 100, "big"), else_="small").label("size"),
                 sa.cast(orders.c.total, Integer))
    yield select(users).where(users.c.created_at.between(FIXED, FIXED + datetime.timedelta(days=1)))
    yield select(users).where(users.c.name.regexp_match("^A"))
    yield select(func.jsonb_agg(orders.c.data).filter(orders.c.status != "void"))
    lat = select(orders.c.total).where(orders.c.user_id == users.c.id).order_by(
        orders.c.total.desc()).limit(1).lateral("top")
    yield select(users.c.id, lat.c.total).join(lat, sa.true())
    yield insert(users).values(email="a@example.com", name="Ann").returning(users.c.id, users.c.created_at)
    yield insert(users).values([{"email": "b@example.com", "name": "B"}, {"email": "c@example.com", "name": None}])
    yield (pg_insert(users).values(email="a@example.com", name="Ann")
           .on_conflict_do_update(index_elements=["email"], set_={"name": sa.text("excluded.name")})
           .returning(users.c.id))
    yield pg_insert(users).values(email="d@example.com").on_conflict_do_nothing()
    yield insert(orders).from_select(["user_id", "total"], select(users.c.id, sa.literal(0)).where(users.c.active))
    yield update(users).where(users.c.id == 5).values(name="Bob", active=False)
    yield (update(orders).where(orders.c.user_id == users.c.id).where(users.c.email == "a@example.com")
           .values(status="void").returning(orders.c.id))
    yield update(orders).values(total=orders.c.total * 1.1).where(orders.c.status == "new")
    yield delete(orders).where(orders.c.status == "void")
    yield delete(items).where(items.c.order_id == orders.c.id).where(orders.c.user_id == 3).returning(items.c.id)
    # ORM-level selects
    yield (select(User).join(User.orders).where(Order.total > 10).options(selectinload(User.orders))
           .order_by(User.id).limit(5).offset(5))
    yield select(User).options(joinedload(User.orders)).where(User.email.ilike("%ann%"))
    ua = aliased(User)
    yield select(Order, ua.email).join(ua, Order.user).where(ua.active.is_(True))
    yield select(func.count()).select_from(select(User).where(User.active).subquery())


# paramstyle "named": a pyformat dialect would double every % in the literal SQL text
PG = postgresql.dialect(paramstyle="named")


def compile_literal(stmt):
    return str(stmt.compile(dialect=PG, compile_kwargs={"literal_binds": True}))


def session_workflow(engine):
    with Session(engine) as s:
        u = User(email="ann@example.com", name="Ann")
        u.orders = [Order(total=12.5, data={"rush": True}, tags=["gift"], items=[Item(sku="A1"), Item(sku="B2", qty=3)]),
                    Order(total=99, status="paid")]
        s.add_all([u, User(email="bob@example.com"), User(email="cy@example.com", name="Cy")])
        s.commit()
        s.scalars(select(User).options(selectinload(User.orders).selectinload(Order.items))
                  .where(User.email.ilike("%@example.com")).order_by(User.id).limit(10).offset(0)).all()
        s.scalars(select(User).options(joinedload(User.orders)).where(User.name.is_not(None))).unique().all()
        s.execute(select(Order).where(Order.id == 1).with_for_update(skip_locked=True)).scalars().first()
        s.get(User, 1)
        u.name = "Annie"
        s.flush()
        s.execute(update(Order).where(Order.status == "new").values(status="paid"))
        s.execute(pg_insert(users).values(email="ann@example.com", name="A2").on_conflict_do_update(
            index_elements=["email"], set_={"name": sa.text("excluded.name")}))
        s.delete(u)
        s.commit()
        s.execute(text("SELECT count(*) FROM sa_users WHERE email LIKE :p"), {"p": "%x%"}).scalar()
        s.execute(delete(User).where(User.active.is_(False)))
        s.rollback()


def reflect(engine):
    insp = sa.inspect(engine)
    insp.get_table_names()
    insp.get_view_names()
    insp.get_schema_names()
    for t in ("sa_users", "sa_orders"):
        insp.get_columns(t)
        insp.get_pk_constraint(t)
        insp.get_foreign_keys(t)
        insp.get_indexes(t)
        insp.get_unique_constraints(t)
        insp.get_check_constraints(t)
        insp.get_table_comment(t)
    insp.get_multi_columns()
    MetaData().reflect(engine, only=["sa_orders"])
    insp.get_enums()
    insp.has_table("nope")
    insp.has_sequence("nope_seq")


def live():
    url = f"postgresql+{{}}://postgres@/sadb?host={host}&application_name=sqlalchemy"
    eng = sa.create_engine(url.format("psycopg"))
    Base.metadata.drop_all(eng)
    Base.metadata.create_all(eng)
    session_workflow(eng)
    reflect(eng)
    eng.dispose()
    eng2 = sa.create_engine(url.format("psycopg2"))
    with eng2.begin() as c:
        c.execute(insert(users).values(email="p2@example.com", name="P2"))
        c.execute(select(users).where(users.c.email.ilike("%p2%")).limit(3)).all()
        c.execute(insert(users).returning(users.c.id), [{"email": f"m{i}@example.com"} for i in range(3)]).all()
    eng2.dispose()

    from sqlalchemy.ext.asyncio import create_async_engine

    async def run_async():
        aeng = create_async_engine(
            f"postgresql+asyncpg://postgres@/sadb?host={host}",
            connect_args={"server_settings": {"application_name": "sqlalchemy"}})
        async with aeng.begin() as c:
            await c.execute(insert(users).values(email="as@example.com", name="Async"))
            (await c.execute(select(users).where(users.c.email.ilike("%as%")).limit(3))).all()
            (await c.execute(select(orders).where(orders.c.id == 1).with_for_update())).all()
            await c.execute(delete(users).where(users.c.email == "as@example.com"))
        await aeng.dispose()

    asyncio.run(run_async())
    eng = sa.create_engine(url.format("psycopg"))
    Base.metadata.drop_all(eng)
    eng.dispose()


if mode == "compile":
    out = []
    for stmt in core_statements():
        out.append(compile_literal(stmt))
    for tbl in Base.metadata.sorted_tables:
        out.append(str(sa.schema.CreateTable(tbl).compile(dialect=PG)).strip())
        for ix in tbl.indexes:
            out.append(str(sa.schema.CreateIndex(ix).compile(dialect=PG)))
    for tbl in reversed(Base.metadata.sorted_tables):
        out.append(str(sa.schema.DropTable(tbl).compile(dialect=PG)).strip())
    json.dump(out, open(sys.argv[2], "w"))
elif mode == "live":
    live()
"""


def write_tree(base: Path, files: dict[str, str]) -> None:
    for rel, content in files.items():
        p = base / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(textwrap.dedent(content).lstrip("\n"), encoding="utf-8")


def run(py: Path, args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    # fixed hash seed: Django builds some IN lists / TRUNCATE lists from sets
    env = {**os.environ, "PYTHONHASHSEED": "0", **env}
    res = subprocess.run([str(py), *args], cwd=cwd, env=env, text=True, capture_output=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"{args} failed in {cwd}:\n{res.stdout}\n{res.stderr}")
    return res


def load_json(path: Path) -> list[str]:
    return json.loads(path.read_text(encoding="utf-8"))


_DJ_CURSOR = re.compile(r"_django_curs_\d+_")
_DJ_SAVEPOINT = re.compile(r'"s\d+_x(\d+)"')


def dj_deterministic(sql: str) -> str:
    """Django puts the thread id into server-side cursor and savepoint names."""
    return _DJ_SAVEPOINT.sub(r'"s1_x\1"', _DJ_CURSOR.sub("_django_curs_1_", sql))


def main() -> int:
    py = ensure_tmp_venv()
    versions = venv_versions(py, ["django", "alembic", "sqlalchemy", "psycopg", "psycopg2-binary", "asyncpg"])
    sections: list[tuple[str, list[str]]] = []
    with embedded_pg() as pg:
        srv_version = server_version(pg)
        pg.psql("CREATE DATABASE djangodb; CREATE DATABASE alembicdb; CREATE DATABASE sadb;")
        env = {"PG_HOST": pg.host}

        # ---- Django
        dj = pg.workdir / "django"
        write_tree(
            dj,
            {
                "djsettings.py": DJ_SETTINGS,
                "shop/__init__.py": "",
                "shop/models.py": DJ_MODELS_V1,
                "shop/migrations/__init__.py": "",
                "driver.py": DJ_DRIVER,
            },
        )
        djenv = {
            **env,
            "DJANGO_SETTINGS_MODULE": "djsettings",
            "PYTHONPATH": str(dj),
            "PG_APPNAME": "django_offline",
        }
        run(py, ["-m", "django", "makemigrations", "shop", "--noinput"], dj, djenv)
        write_tree(
            dj,
            {
                "shop/models.py": DJ_MODELS_FINAL,
                "shop/migrations/0002_rename_and_constraints.py": DJ_MIGRATION_0002,
                "shop/migrations/0003_review_and_more.py": DJ_MIGRATION_0003,
            },
        )
        run(py, ["driver.py", "sql", str(dj / "sql.json")], dj, djenv)
        sections.append(("django sqlmigrate", load_json(dj / "sql.json")))
        mark = pg.log_mark()
        run(py, ["driver.py", "migrate"], dj, {**djenv, "PG_APPNAME": "django"})
        run(py, ["driver.py", "post_sql", str(dj / "post.json")], dj, djenv)
        sections.append(
            ("django sqlmigrate --backwards/sqlsequencereset/sqlflush", load_json(dj / "post.json"))
        )
        run(py, ["driver.py", "runtime"], dj, {**djenv, "PG_APPNAME": "django"})
        dj_live = [dj_deterministic(s) for s in pg.logged_statements(since=mark, app="django")]
        sections.append(("django live", dedupe_by_shape(dj_live)))

        # ---- Alembic
        al = pg.workdir / "alembic"
        url = f"postgresql+psycopg://postgres@/alembicdb?host={pg.host}&application_name=alembic"
        al.mkdir()
        run(py, ["-m", "alembic", "init", "migrations"], al, {})
        (al / "alembic.ini").write_text(ALEMBIC_INI.format(url=url), encoding="utf-8")
        write_tree(
            al,
            {
                "migrations/versions/1a2b3c4d5e6f_create_users_and_posts.py": ALEMBIC_REV1,
                "migrations/versions/2b3c4d5e6f70_profile_columns.py": ALEMBIC_REV2,
                "migrations/versions/3c4d5e6f7081_comments.py": ALEMBIC_REV3,
                "driver.py": ALEMBIC_DRIVER,
            },
        )
        run(py, ["driver.py", "offline", str(al / "offline.json")], al, env)
        sections.append(("alembic offline", load_json(al / "offline.json")))
        mark = pg.log_mark()
        run(py, ["driver.py", "online", "-"], al, env)
        sections.append(("alembic live", dedupe_by_shape(pg.logged_statements(since=mark, app="alembic"))))

        # ---- SQLAlchemy
        sa_dir = pg.workdir / "sqlalchemy"
        write_tree(sa_dir, {"driver.py": SA_DRIVER})
        run(py, ["driver.py", "compile", str(sa_dir / "compiled.json")], sa_dir, env)
        sections.append(("sqlalchemy compiled", load_json(sa_dir / "compiled.json")))
        mark = pg.log_mark()
        run(py, ["driver.py", "live"], sa_dir, env)
        sections.append(
            ("sqlalchemy live", dedupe_by_shape(pg.logged_statements(since=mark, app="sqlalchemy")))
        )

    for name, stmts in sections:
        print(f"  {name}: {len(stmts)} captured", file=sys.stderr)
    source = (
        "Produced by scripts/gen_corpus_orm.py with a throwaway venv (" + versions + ") and a "
        f"throwaway PostgreSQL {srv_version} (pgserver package, log_statement=all). In order: "
        "(1) Django `sqlmigrate` output for contenttypes 0001-0002, auth 0001-0012 and a test app "
        "'shop' 0001 (makemigrations: FK, unique, db_index, SlugField, JSONField, ManyToMany, "
        "composite index) / 0002 (RenameField, AddField, RemoveField, AlterField to unique, "
        "CheckConstraint, partial UniqueConstraint) / 0003 (GinIndex, AlterField type/null, "
        "RenameModel, CreateModel, unique_together, UUID field); statements split from the printed "
        "script, '--' comments and the BEGIN;/COMMIT; wrapper lines dropped; (2) after `migrate`: "
        "`sqlmigrate --backwards` for shop 0003..0001, `sqlsequencereset` and `sqlflush`, split "
        "the same way; "
        "(3) everything Django (psycopg 3, client-side binding) sent live during `migrate`, "
        "`showmigrations` and a script of typical ORM calls (get_or_create, bulk_create/update, "
        "select_related/prefetch_related, JSON lookups, annotate/aggregate, Subquery/Exists, "
        "window, ArrayAgg/StringAgg, full text search, select_for_update, savepoints, iterator "
        "(server-side cursor), raw, pagination, "
        "cascading deletes), from the server log; (4) `alembic upgrade head --sql` and `alembic "
        "downgrade head:base --sql` (offline) for three revisions using create_table, "
        "create_index (gin, partial, concurrently), add_column, alter_column (type, rename, "
        "nullable, server_default, postgresql_using), drop_column, create_foreign_key, "
        "check/unique constraints, bulk_insert, execute, table comments, sequences, rename_table, "
        "drop_*; '-- Running upgrade' comments and BEGIN;/COMMIT; wrappers dropped; (5) what "
        "`alembic upgrade head`, `downgrade -1` and `current` sent live (psycopg 3); (6) SQLAlchemy "
        "Core/ORM statements (joins, limit/offset, ILIKE, CTE, window, lateral, DISTINCT ON, JSONB, "
        "ARRAY, FOR UPDATE variants, INSERT..RETURNING, ON CONFLICT, UPDATE..FROM, DELETE..USING, "
        "CREATE/DROP TABLE/INDEX) compiled for the postgresql dialect with literal_binds; (7) what "
        "SQLAlchemy sent live through psycopg 3 (server-side binding, $n), psycopg2 and asyncpg "
        "for create_all/drop_all, a Session workflow and Inspector reflection. In the live "
        "captures (3), (5), (7) statements that differ only in literal values are kept once, and the "
        "thread-id part of Django's cursor/savepoint names is replaced by 1 for determinism; "
        "otherwise identical statements (ignoring a trailing ';') are kept once."
    )
    write_corpus("orm_migrations", source, [s for _, stmts in sections for s in stmts])
    return 0


if __name__ == "__main__":
    sys.exit(main())
